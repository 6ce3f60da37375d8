//! Turning the router's answers into one final decision for a connection, waiting out
//! [`Route::Hold`] and a brief period with no ready worker.
//!
//! The router is pure; this is the one piece of async glue that goes with it, kept here so the
//! subtle part (not missing a table-change notification between asking and waiting) is written
//! and tested once. The daemon calls `notify.notify_waiters()` after every router change that
//! can unblock a waiting connection: `on_session`, `set_ready`, `add_worker` and
//! `remove_worker`.

use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::router::{Route, Router};

/// Asks the router (through `with_router`) where a request goes, until the answer is a worker
/// or waiting longer is pointless. Returns [`Route::Worker`] or [`Route::NoWorker`], never
/// [`Route::Hold`].
///
/// - Hold: wait for a notification or the hold's `until`, then ask again. The router bounds the
///   total hold by its hold window, counted from the first ask.
/// - No ready worker: wait for a notification (a worker became ready) for at most
///   `no_worker_wait` from the first ask, then give up so the caller answers `503`.
///
/// `with_router` runs its argument on the app's router and returns its answer, or `None` if the
/// app no longer exists (then: `NoWorker`). It is called synchronously, never across an await,
/// so a `RefCell` borrow inside it is safe on the daemon's single-threaded runtime.
pub async fn resolve_route<W>(
    notify: &Notify,
    sid: Option<&str>,
    no_worker_wait: Duration,
    mut with_router: W,
) -> Route
where
    W: FnMut(&mut dyn FnMut(&mut Router) -> Route) -> Option<Route>,
{
    let arrived = Instant::now();
    let give_up = arrived + no_worker_wait;
    loop {
        // Register interest before asking, so a change between the ask and the wait is not
        // missed.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let now = Instant::now();
        let route = with_router(&mut |r: &mut Router| match sid {
            None => r.route(None, now.into_std()),
            Some(sid) => r.reroute(sid, arrived.into_std(), now.into_std()),
        });
        let Some(route) = route else {
            return Route::NoWorker;
        };
        let wait_until = match route {
            Route::Worker(_) => return route,
            Route::Hold { until } => Instant::from_std(until),
            Route::NoWorker if now >= give_up => return Route::NoWorker,
            Route::NoWorker => give_up,
        };
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(wait_until) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sticky::router::{Policy, WorkerId};
    use std::cell::RefCell;

    const W1: WorkerId = WorkerId(1);
    const W2: WorkerId = WorkerId(2);

    fn router(ids: &[WorkerId]) -> RefCell<Router> {
        let mut r = Router::with_seed(Policy::LeastConnection, 7);
        for &id in ids {
            r.add_worker(id);
            r.set_ready(id);
        }
        RefCell::new(r)
    }

    async fn resolve(r: &RefCell<Router>, n: &Notify, sid: Option<&str>) -> Route {
        resolve_route(n, sid, Duration::from_secs(2), |f| Some(f(&mut r.borrow_mut()))).await
    }

    #[tokio::test(start_paused = true)]
    async fn held_request_follows_the_registration() {
        let r = router(&[W1, W2]);
        let n = Notify::new();
        // The handshake went to W1 (least loaded, first in order).
        assert_eq!(resolve(&r, &n, None).await, Route::Worker(W1));
        let start = Instant::now();
        let (route, ()) = tokio::join!(resolve(&r, &n, Some("fresh")), async {
            tokio::time::sleep(Duration::from_millis(40)).await;
            r.borrow_mut().on_session(W1, "fresh");
            n.notify_waiters();
        });
        assert_eq!(route, Route::Worker(W1));
        assert_eq!(start.elapsed(), Duration::from_millis(40));
    }

    #[tokio::test(start_paused = true)]
    async fn hold_gives_up_after_the_window() {
        let r = router(&[W1, W2]);
        let n = Notify::new();
        resolve(&r, &n, None).await;
        let start = Instant::now();
        let route = resolve(&r, &n, Some("never-registered")).await;
        assert!(matches!(route, Route::Worker(_)));
        assert!(start.elapsed() <= crate::sticky::router::DEFAULT_HOLD_WINDOW);
        assert!(start.elapsed() > Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn unrelated_notifications_keep_holding() {
        let r = router(&[W1, W2]);
        let n = Notify::new();
        resolve(&r, &n, None).await;
        let (route, ()) = tokio::join!(resolve(&r, &n, Some("mine")), async {
            for i in 0..5 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                r.borrow_mut().on_session(W2, &format!("other{i}"));
                n.notify_waiters();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            r.borrow_mut().on_session(W1, "mine");
            n.notify_waiters();
        });
        assert_eq!(route, Route::Worker(W1));
    }

    #[tokio::test(start_paused = true)]
    async fn no_worker_waits_for_readiness_then_routes() {
        let r = RefCell::new(Router::with_seed(Policy::LeastConnection, 1));
        r.borrow_mut().add_worker(W1);
        let n = Notify::new();
        let (route, ()) = tokio::join!(resolve(&r, &n, None), async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            r.borrow_mut().set_ready(W1);
            n.notify_waiters();
        });
        assert_eq!(route, Route::Worker(W1));
    }

    #[tokio::test(start_paused = true)]
    async fn no_worker_gives_up_for_a_503() {
        let r = RefCell::new(Router::with_seed(Policy::LeastConnection, 1));
        let n = Notify::new();
        let start = Instant::now();
        assert_eq!(resolve(&r, &n, None).await, Route::NoWorker);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        let gone = resolve_route(&n, None, Duration::from_secs(2), |_| None).await;
        assert_eq!(gone, Route::NoWorker);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_through_the_resolver_spreads() {
        let r = router(&[W1, W2]);
        let n = Notify::new();
        let mut per = [0u32; 2];
        for _ in 0..50 {
            match resolve(&r, &n, None).await {
                Route::Worker(W1) => per[0] += 1,
                Route::Worker(W2) => per[1] += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(per, [25, 25]);
    }
}
