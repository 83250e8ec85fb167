//! One token set for every replica (DESIGN §3, issue 3).
//!
//! CC has no client-credentials grant: a person approves the app once (`ccsync auth login`, the
//! device flow) and from then on the integration lives on refresh tokens. With rotating refresh
//! tokens, two replicas refreshing at once or one lost refresh response kills the connection, so
//! every replica shares ONE token set in Redis and refreshes it behind a lease lock, fenced by a
//! generation compare-and-set, with a refresh-in-flight marker that survives a crashed holder.
//!
//! | file | concern |
//! |---|---|
//! | [`tokenset`] | `TokenSet`, secret types with redacted `Debug`, JWT `exp` decoding, JWKS check |
//! | [`store`] (+ `store/crypto.rs`) | the Redis record (AES-256-GCM at rest), generation CAS and write-back in Lua; key layout |
//! | [`lock`] | the lease lock (`SET NX PX` + compare-and-delete) |
//! | [`provider`] (+ `provider/{cache,refresh,background,state,jwks}.rs`) | [`TokenProvider`]: in-memory hot path, the refresh protocol, dead/alive, background |
//! | [`device`] | the device-flow login loop |
//! | [`code`] | the authorization-code and PKCE logins (authorize URL, loopback listener or paste) |
//! | [`connect`] | connect links' authorize URL and callback: the `--flow code` exchange and storage, for `ccsync ingest` |
//! | [`cli`] | `auth login | import | status | logout` |
//!
//! The HTTP calls to the authorization server live in [`crate::cc::oauth`] (reqwest stays in
//! `cc`).

pub mod cli;
pub mod code;
pub(crate) mod connect;
pub mod device;
pub mod lock;
pub mod provider;
pub mod store;
pub mod tokenset;

pub use provider::{AuthError, TokenProvider};
pub use tokenset::{AccessToken, LoginFlow, RefreshMode, RefreshToken, TokenSet};
