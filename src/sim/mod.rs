//! (room: sim)
