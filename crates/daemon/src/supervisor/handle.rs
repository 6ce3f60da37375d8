//! The handle every caller holds to talk to one process's actor. Each
//! method queues a control and returns a [`Ticket`] at once; awaiting the
//! ticket gives the answer, dropping it does not cancel the control (a
//! queued restart happens whether or not anyone waits for it).

use crate::error::{DaemonError, Result};
use corral_proto::AppSpec;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};

pub(crate) type Done = oneshot::Sender<Result<()>>;

/// Controls queued to a process actor, handled one at a time.
#[derive(Debug)]
pub(crate) enum Ctl {
    /// Launch if not running (`pm2 start <id>` on a stopped process, or the
    /// first launch). Answers once the process is online (or failed).
    Start {
        done: Done,
    },
    Stop {
        done: Done,
    },
    /// `update` replaces the stored spec first (`--update-env`, ecosystem).
    Restart {
        update: Option<Box<AppSpec>>,
        done: Done,
    },
    Reload {
        update: Option<Box<AppSpec>>,
        done: Done,
    },
    Delete {
        done: Done,
    },
    Signal {
        sig: i32,
        done: Done,
    },
    /// `pm2 reset`: restart counters back to zero.
    Reset {
        done: Done,
    },
    /// The periodic worker saw the process up long enough: the exponential
    /// backoff starts over.
    ResetBackoff {
        done: Done,
    },
}

/// The answer to one control, to await or to drop.
#[must_use = "dropping a ticket does not cancel the control; `drop()` it to say so"]
pub struct Ticket(oneshot::Receiver<Result<()>>);

impl Future for Ticket {
    type Output = Result<()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        // A dropped sender means the actor ended (the process was deleted)
        // before answering.
        Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or(Err(DaemonError::TaskEnded)))
    }
}

/// A cloneable address of one process actor.
#[derive(Clone, Debug)]
pub struct ProcessHandle {
    id: u32,
    tx: mpsc::UnboundedSender<Ctl>,
}

impl ProcessHandle {
    pub(crate) fn new(id: u32) -> (Self, mpsc::UnboundedReceiver<Ctl>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ProcessHandle { id, tx }, rx)
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    fn send(&self, make: impl FnOnce(Done) -> Ctl) -> Ticket {
        let (done, rx) = oneshot::channel();
        // A closed queue drops `done` with the control: the ticket then
        // resolves to `TaskEnded`.
        let _ = self.tx.send(make(done));
        Ticket(rx)
    }

    /// Launches the process unless it runs; resolves once it is online.
    pub fn start(&self) -> Ticket {
        self.send(|done| Ctl::Start { done })
    }

    /// pm2's stop sequence; resolves once the process is stopped.
    pub fn stop(&self) -> Ticket {
        self.send(|done| Ctl::Stop { done })
    }

    /// Stop then start (`update` replaces the spec first).
    pub fn restart(&self, update: Option<Box<AppSpec>>) -> Ticket {
        self.send(|done| Ctl::Restart { update, done })
    }

    /// Zero-downtime replacement for an online cluster worker, a restart
    /// otherwise.
    pub fn reload(&self, update: Option<Box<AppSpec>>) -> Ticket {
        self.send(|done| Ctl::Reload { update, done })
    }

    /// Stops the process and ends its actor; resolves once it is gone.
    pub fn delete(&self) -> Ticket {
        self.send(|done| Ctl::Delete { done })
    }

    /// Sends a signal to the running child.
    pub fn signal(&self, sig: i32) -> Ticket {
        self.send(|done| Ctl::Signal { sig, done })
    }

    /// Zeroes the restart counters (`pm2 reset`).
    pub fn reset(&self) -> Ticket {
        self.send(|done| Ctl::Reset { done })
    }

    /// Forgets the exponential backoff delay.
    pub fn reset_backoff(&self) -> Ticket {
        self.send(|done| Ctl::ResetBackoff { done })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ticket_resolves_with_the_actors_answer() {
        let (h, mut rx) = ProcessHandle::new(7);
        let t = h.signal(15);
        match rx.recv().await {
            Some(Ctl::Signal { sig: 15, done }) => {
                let _ = done.send(Err(DaemonError::NotRunning(7)));
            }
            other => panic!("unexpected control {other:?}"),
        }
        assert_eq!(t.await, Err(DaemonError::NotRunning(7)));
    }

    #[tokio::test]
    async fn a_gone_actor_is_task_ended_not_a_hang() {
        let (h, rx) = ProcessHandle::new(1);
        drop(rx);
        assert_eq!(h.stop().await, Err(DaemonError::TaskEnded));
        // Dropped unanswered control: same.
        let (h, mut rx) = ProcessHandle::new(2);
        let t = h.restart(None);
        drop(rx.recv().await);
        assert_eq!(t.await, Err(DaemonError::TaskEnded));
    }
}
