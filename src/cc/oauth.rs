//! (cc oauth: token endpoint calls; issue 3)
