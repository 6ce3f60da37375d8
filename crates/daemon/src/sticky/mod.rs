//! Socket.IO sticky balancer and cluster-adapter relay: the part `@socket.io/pm2` adds to PM2.
//!
//! - [`http`] reads one request off a sticky-port connection (bounded) and finds its `sid`.
//! - [`router`] decides which worker of an app gets it (sessions, readiness, draining, the
//!   registration-race hold, load spreading).
//! - [`dispatch`] waits out the router's holds and a brief no-worker period for one connection.
//! - [`relay`] decides where a `@socket.io/cluster-adapter` frame goes, and what to announce
//!   when a worker exits.
//!
//! All three are free of daemon I/O so each rule is unit-tested on its own; the daemon wires
//! them to sockets, IPC channels and the clock.

pub mod dispatch;
pub mod http;
pub mod relay;
pub mod router;

pub use dispatch::resolve_route;
pub use http::{read_request, HttpLimits, ReadError, Reject, Request};
pub use relay::{adapter_close_message, AdapterFrame, Relay, ADAPTER_SOURCE};
pub use router::{Policy, Route, Router, WorkerId};
