//! (room: auth)
