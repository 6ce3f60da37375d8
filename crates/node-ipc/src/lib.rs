//! Node.js's IPC channel, from the parent's side.
