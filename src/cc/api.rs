//! (cc api: the pipeline calls)
