//! placeholder
use super::state::Shared;
use axum::Router;
use std::sync::Arc;
pub fn router(_sh: Arc<Shared>) -> Router<Arc<Shared>> {
    Router::new()
}
