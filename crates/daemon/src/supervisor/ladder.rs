//! The one escalation ladder: signal, wait, signal harder, wait, SIGKILL.
//! Used to stop a process and to retire a worker a reload replaced; generic
//! over the child so its timing is tested with a fake child on paused time.

use crate::dlog;
use std::future::Future;
use std::process::ExitStatus;
use std::time::Duration;

/// What the ladder needs of a child.
pub(crate) trait Child {
    /// Resolves once the child exited (`None`: its status is unknown).
    fn wait(&mut self) -> impl Future<Output = Option<ExitStatus>>;
    /// Sends `sig` to the child, or to its whole tree.
    fn signal(&mut self, sig: i32, tree: bool);
    fn pid(&self) -> i32;
}

/// Climbs the ladder. Each rung sends its signal (`None`: the child was
/// already asked some other way) and waits up to `grace` for the exit. Past
/// the last rung the whole tree gets SIGKILL, then the ladder waits
/// `after_kill` (`None`: as long as it takes). `None` when the child
/// survived even that.
pub(crate) async fn escalate<C: Child>(
    child: &mut C,
    rungs: &[Option<(i32, bool)>],
    grace: Duration,
    after_kill: Option<Duration>,
) -> Option<ExitStatus> {
    for rung in rungs {
        if let Some((sig, tree)) = *rung {
            child.signal(sig, tree);
        }
        if let Ok(st) = tokio::time::timeout(grace, child.wait()).await {
            return st;
        }
    }
    dlog::log(&format!(
        "Process with pid {} still alive after {}ms, sending it SIGKILL now...",
        child.pid(),
        grace.as_millis()
    ));
    child.signal(libc::SIGKILL, true);
    match after_kill {
        Some(d) => tokio::time::timeout(d, child.wait()).await.ok().flatten(),
        None => child.wait().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use tokio::time::Instant;

    /// A child that exits on the signals in `dies_on` and records every
    /// signal it gets.
    struct Fake {
        dies_on: Vec<i32>,
        sent: Vec<(i32, bool)>,
        exited: Option<ExitStatus>,
    }

    impl Fake {
        fn new(dies_on: &[i32]) -> Fake {
            Fake { dies_on: dies_on.to_vec(), sent: Vec::new(), exited: None }
        }
    }

    impl Child for Fake {
        async fn wait(&mut self) -> Option<ExitStatus> {
            match self.exited {
                Some(st) => Some(st),
                None => std::future::pending().await,
            }
        }
        fn signal(&mut self, sig: i32, tree: bool) {
            self.sent.push((sig, tree));
            if self.dies_on.contains(&sig) {
                self.exited = Some(ExitStatus::from_raw(sig));
            }
        }
        fn pid(&self) -> i32 {
            42
        }
    }

    const GRACE: Duration = Duration::from_millis(1600);

    #[tokio::test(start_paused = true)]
    async fn a_child_that_obeys_the_first_signal_gets_no_other() {
        let mut c = Fake::new(&[libc::SIGINT]);
        let t0 = Instant::now();
        let st = escalate(&mut c, &[Some((libc::SIGINT, false))], GRACE, Some(GRACE)).await;
        assert_eq!(st.and_then(|s| s.signal()), Some(libc::SIGINT));
        assert_eq!(c.sent, [(libc::SIGINT, false)]);
        assert!(t0.elapsed() < GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_child_ignoring_its_signal_gets_sigkill_after_the_grace_period() {
        let mut c = Fake::new(&[libc::SIGKILL]);
        let t0 = Instant::now();
        let st = escalate(&mut c, &[Some((libc::SIGTERM, true))], GRACE, Some(GRACE)).await;
        assert!(st.is_some());
        assert_eq!(c.sent, [(libc::SIGTERM, true), (libc::SIGKILL, true)]);
        assert_eq!(t0.elapsed(), GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn an_already_asked_child_gets_each_rung_in_turn() {
        // Retiring: asked by message, then the kill signal, then SIGKILL.
        let mut c = Fake::new(&[libc::SIGKILL]);
        let t0 = Instant::now();
        let st = escalate(&mut c, &[None, Some((libc::SIGINT, false))], GRACE, None).await;
        assert!(st.is_some());
        assert_eq!(c.sent, [(libc::SIGINT, false), (libc::SIGKILL, true)]);
        assert_eq!(t0.elapsed(), GRACE * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unkillable_child_is_reported_after_the_last_wait() {
        let mut c = Fake::new(&[]);
        let t0 = Instant::now();
        let st = escalate(&mut c, &[Some((libc::SIGINT, false))], GRACE, Some(GRACE)).await;
        assert_eq!(st, None);
        assert_eq!(t0.elapsed(), GRACE * 2);
    }
}
