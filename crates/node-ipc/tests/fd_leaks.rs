//! No descriptor outlives the scenario that created it. This file holds one
//! test so that nothing else in the process opens or closes fds meanwhile.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use node_ipc::{encode_frame, Channel, HandleOutcome, HandleType, Limits, Mode, Value};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

async fn settle(baseline: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if open_fds() == baseline {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fds leaked: {} open, baseline {baseline}",
            open_fds()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn no_descriptor_leaks() {
    // Let the runtime open whatever it keeps (timer, signal pipes…).
    tokio::time::sleep(Duration::from_millis(1)).await;
    let baseline = open_fds();

    // Acked handles between two channels, then everything dropped.
    {
        let (a, b) = UnixStream::pair().unwrap();
        let (atx, _arx) = Channel::new(a.into(), Mode::Advanced, Limits::default()).unwrap();
        let (_btx, mut brx) = Channel::new(b.into(), Mode::Advanced, Limits::default()).unwrap();
        for _ in 0..20 {
            let (h, _other) = UnixStream::pair().unwrap();
            let reply = atx.send_handle(&Value::Null, HandleType::NetSocket, OwnedFd::from(h));
            let got = brx.recv().await.unwrap().unwrap();
            assert!(got.handle().is_some());
            assert!(matches!(reply.await, HandleOutcome::Acked(_)));
        }
    }
    settle(baseline).await;

    // Peer vanishes with a handle in flight and more queued behind it.
    {
        let (a, mut peer) = UnixStream::pair().unwrap();
        let (tx, _rx) = Channel::new(a.into(), Mode::Json, Limits::default()).unwrap();
        let mut replies = Vec::new();
        for _ in 0..5 {
            let (h, _other) = UnixStream::pair().unwrap();
            replies.push(tx.send_handle(&Value::Null, HandleType::NetNative, OwnedFd::from(h)));
            tx.send(&Value::from("queued")).unwrap();
        }
        tokio::task::spawn_blocking(move || {
            let mut buf = [0u8; 16];
            peer.read_exact(&mut buf).unwrap();
        })
        .await
        .unwrap();
        for r in replies {
            assert!(matches!(r.await, HandleOutcome::Closed(_)));
        }
    }
    settle(baseline).await;

    // Replies dropped unawaited, channel aborted.
    {
        let (a, _peer) = UnixStream::pair().unwrap();
        let (tx, _rx) = Channel::new(a.into(), Mode::Advanced, Limits::default()).unwrap();
        for _ in 0..5 {
            let (h, _other) = UnixStream::pair().unwrap();
            drop(tx.send_handle(&Value::Null, HandleType::NetSocket, OwnedFd::from(h)));
        }
        tx.abort();
    }
    settle(baseline).await;

    // The peer sends fds we never claim (no NODE_HANDLE frame follows), and
    // one NODE_HANDLE whose fd we receive and drop.
    {
        let (a, b) = UnixStream::pair().unwrap();
        let (_atx, mut arx) = Channel::new(a.into(), Mode::Advanced, Limits::default()).unwrap();
        let (btx, _brx) = Channel::new(b.into(), Mode::Advanced, Limits::default()).unwrap();
        let (h, _other) = UnixStream::pair().unwrap();
        let reply = btx.send_handle(&Value::from(1), HandleType::NetSocket, OwnedFd::from(h));
        drop(arx.recv().await.unwrap().unwrap());
        assert!(matches!(reply.await, HandleOutcome::Acked(_)));
        drop(btx);
        assert!(arx.recv().await.is_none());
    }
    settle(baseline).await;

    // A frame error ends the channel and releases its socket.
    {
        let (a, mut peer) = UnixStream::pair().unwrap();
        let mut limits = Limits::default();
        limits.max_frame_len = 8;
        let (_tx, mut rx) = Channel::new(a.into(), Mode::Advanced, limits).unwrap();
        peer.write_all(&encode_frame(&Value::from("0123456789"), Mode::Advanced).unwrap()).unwrap();
        assert!(rx.recv().await.unwrap().is_err());
        assert!(rx.recv().await.is_none());
    }
    settle(baseline).await;
}
