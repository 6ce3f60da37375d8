//! The process supervisor: one actor per process ([`actor`]), addressed
//! through a cloneable [`ProcessHandle`].

pub mod actor;
pub mod handle;
pub mod host;

pub use actor::{command_line, fill_paths, parse_signal, register, signal_name};
pub use handle::{ProcessHandle, Ticket};
