//! The process supervisor: one actor per process ([`actor`]), addressed
//! through a cloneable [`ProcessHandle`].

pub mod actor;
pub mod handle;
pub mod host;
mod ladder;

pub use crate::proctree::{parse_signal, signal_name};
pub use actor::{command_line, fill_paths, register};
pub use handle::{ProcessHandle, Ticket};
