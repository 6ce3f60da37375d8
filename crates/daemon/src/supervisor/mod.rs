//! The process supervisor: one actor per process ([`actor`]), addressed
//! through a cloneable [`ProcessHandle`].

pub mod actor;
pub mod adopted;
pub mod handle;
pub mod host;
mod ladder;
pub mod spawn;

pub use crate::proctree::{parse_signal, signal_name};
pub use actor::register;
pub use handle::{ProcessHandle, Ticket};
pub use spawn::{command_line, fill_paths};
