//! (room: batch)
