//! Arbitrary sequences of worker lifecycle events, session reports, hand-offs and routing
//! questions through the sticky router and the admission table. Nothing may panic, every answer
//! must respect the rules (a session-less request is never held, a worker answer names a ready
//! worker or the sid's owner, holds end within the window), and the tables stay consistent.
#![no_main]

use corral_daemon::sticky::router::DEFAULT_HOLD_WINDOW;
use corral_daemon::sticky::{Admission, Policy, Route, Router, WorkerId};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&policy, ops)) = data.split_first() else { return };
    let policy = match policy % 3 {
        0 => Policy::LeastConnection,
        1 => Policy::RoundRobin,
        _ => Policy::Random,
    };
    let mut r = Router::with_seed(policy, u64::from(policy as u8) + 1);
    let mut adm: Admission<u64> = Admission::new(8, 4096);
    let mut open: Vec<u64> = Vec::new();
    let t0 = Instant::now();
    let mut now = t0;
    for op in ops.chunks(3) {
        let [code, a, b] = [op[0], *op.get(1).unwrap_or(&0), *op.get(2).unwrap_or(&0)];
        let id = WorkerId(u32::from(a % 6));
        let sid = format!("s{}", b % 32);
        now += Duration::from_millis(u64::from(b % 50));
        match code % 14 {
            0 => r.add_worker(id),
            1 => r.set_ready(id),
            2 => r.set_draining(id),
            3 => {
                for s in r.remove_worker(id) {
                    assert!(r.owner(&s).is_none());
                }
            }
            4 => {
                r.on_session(id, &sid);
            }
            5 => {
                r.on_session_closed(id, &sid);
            }
            6 => r.handoff_started(id),
            7 => r.handoff_finished(id),
            8 => r.expect_sessions(id, usize::from(b), now),
            9 => match r.route(None, now) {
                Route::Worker(w) => assert!(r.is_ready(w)),
                Route::NoWorker => assert!(!r.has_ready_worker()),
                Route::Hold { .. } => panic!("a session-less request is never held"),
            },
            10 => {
                let arrived = now.checked_sub(Duration::from_millis(u64::from(a) * 2)).unwrap_or(now);
                match r.reroute(&sid, arrived, now) {
                    Route::Worker(w) => assert!(r.has_worker(w)),
                    Route::Hold { until } => assert!(until > now && until <= arrived + DEFAULT_HOLD_WINDOW),
                    Route::NoWorker => assert!(!r.has_ready_worker()),
                }
            }
            11 => {
                let (conn, _) = adm.admit(u64::from(a));
                open.push(conn);
            }
            12 if !open.is_empty() => {
                let conn = open[usize::from(a) % open.len()];
                adm.charge(conn, usize::from(b) * 16);
            }
            13 if !open.is_empty() => {
                let conn = open.swap_remove(usize::from(a) % open.len());
                adm.release(conn);
            }
            _ => {}
        }
        if let Err(e) = r.check_consistency() {
            panic!("router inconsistent: {e}");
        }
        assert!(adm.live() <= adm.cap());
        assert!(adm.live_bytes() <= 4096);
        assert_eq!(adm.in_use(), open.len());
    }
});
