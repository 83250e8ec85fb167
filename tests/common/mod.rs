//! The integration tests' kit: `ccsync-kit` (`kit/`, one copy shared with the bench), whose
//! [`World`] here starts the `ccsync` binary Cargo built for these tests (only the root package's
//! integration tests have `CARGO_BIN_EXE_ccsync`, so the kit takes the path from its caller).
#![allow(dead_code)]

use std::ops::{Deref, DerefMut};

use ccsync::sim::SimConfig;
pub use ccsync_kit::*;

/// [`ccsync_kit::World`] with the test binary as its workers' `ccsync`.
pub struct World(ccsync_kit::World);

impl World {
    /// See [`ccsync_kit::World::new`].
    pub async fn new(cfg: SimConfig) -> World {
        World::new_with(cfg, &[]).await
    }

    /// See [`ccsync_kit::World::new_with`].
    pub async fn new_with(cfg: SimConfig, extra: &[(&str, &str)]) -> World {
        let w = ccsync_kit::World::new_with(cfg, extra).await;
        World(w.with_bin(env!("CARGO_BIN_EXE_ccsync")))
    }

    pub fn fast_sim() -> SimConfig {
        ccsync_kit::World::fast_sim()
    }

    pub async fn cleanup(self) {
        self.0.cleanup().await
    }
}

impl Deref for World {
    type Target = ccsync_kit::World;
    fn deref(&self) -> &ccsync_kit::World {
        &self.0
    }
}

impl DerefMut for World {
    fn deref_mut(&mut self) -> &mut ccsync_kit::World {
        &mut self.0
    }
}
