//! (room: pipeline)
