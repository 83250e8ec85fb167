//! (room: contact)
