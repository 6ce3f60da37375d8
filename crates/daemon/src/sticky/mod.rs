//! Socket.IO sticky balancer and cluster-adapter relay: the part `@socket.io/pm2` adds to PM2.
//!
//! - [`http`] reads one request off a sticky-port connection (bounded) and finds its `sid`.
//! - [`admission`] bounds the connections being read and their buffered bytes, shedding the
//!   oldest under a flood.
//! - [`router`] decides which worker of an app gets it (sessions, readiness, draining, the
//!   registration-race hold, load spreading).
//! - [`dispatch`] waits out the router's holds and a brief no-worker period for one connection.
//! - [`relay`] decides where a `@socket.io/cluster-adapter` frame goes, and what to announce
//!   when a worker exits.
//!
//! All of them are free of daemon I/O so each rule is unit-tested on its own; the daemon wires
//! them to sockets, IPC channels and the clock.
//!
//! # Wiring (one `Router` + one `Relay` per opted-in app, one `Notify` per app)
//!
//! ```text
//! accept on the sticky port
//!   read_request(&mut stream, &limits)          Err(e) -> write e.rejection() if any, close
//!   resolve_route(&notify, req.sid, wait, ..)   NoWorker -> write Reject::ServiceUnavailable, close
//!   Worker(w): router.handoff_started(w)        (before any await, so a burst sees it)
//!              NODE_HANDLE{type:'net.Socket', msg:{type:'sticky:connection', data:<req.data as Buffer>}}
//!              + fd to w; never read the stream again
//!   on NODE_HANDLE_ACK / NACK / channel loss:  router.handoff_finished(w)
//!
//! worker W -> daemon
//!   {type:'sticky:connection', data:sid}       router.on_session(W, sid); notify.notify_waiters()
//!   {type:'sticky:disconnection', data:sid}    router.on_session_closed(W, sid)
//!   first sticky:* / adapter heartbeat / 'ready': router.set_ready(W); notify.notify_waiters()
//!   {source:'_sio_adapter', ..}                 targets = relay.on_frame(W, &frame);
//!                                               forward the frame's bytes verbatim to each target
//! spawn W: router.add_worker(W); relay.add_worker(W)
//! health checks of W (not) ready: router.set_healthy(W, ready)   (its sids still route to it)
//! reload/stop W: router.set_draining(W) before signalling it
//! exit W:  router.remove_worker(W); notify.notify_waiters();
//!          for (uid, nsp) in relay.remove_worker(W):
//!              send adapter_close_message(uid, nsp) to every w in relay.workers()
//! ```

pub mod admission;
pub mod dispatch;
pub mod http;
pub mod relay;
pub mod router;

pub use admission::{cap_for_fd_limit, Admission};
pub use dispatch::resolve_route;
pub use http::{
    count_handshakes, read_body, read_head, read_now, read_request, try_complete, unknown_sid_response, Head,
    HttpLimits, ReadError, Reject, Request,
};
pub use relay::{adapter_close_message, AdapterFrame, Relay, ADAPTER_SOURCE};
pub use router::{Policy, Route, Router, WorkerId, WorkerState};
