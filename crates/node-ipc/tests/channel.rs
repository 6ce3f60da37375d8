//! Channel behaviour against in-process peers: another `Channel`, or a raw
//! socket that misbehaves on purpose.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{recv, DEADLINE};
use node_ipc::{
    encode_frame, Channel, Error, HandleOutcome, HandleType, Limits, Mode, Receiver, Sender, Value,
};

fn pair(mode: Mode) -> ((Sender, Receiver), (Sender, Receiver)) {
    let (a, b) = UnixStream::pair().unwrap();
    (
        Channel::new(OwnedFd::from(a), mode, Limits::default()).unwrap(),
        Channel::new(OwnedFd::from(b), mode, Limits::default()).unwrap(),
    )
}

/// A channel whose peer is a plain blocking socket driven by the test.
fn raw_peer(mode: Mode, limits: Limits) -> (Sender, Receiver, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    b.set_read_timeout(Some(DEADLINE)).unwrap();
    let (tx, rx) = Channel::new(OwnedFd::from(a), mode, limits).unwrap();
    (tx, rx, b)
}

fn read_frame(s: &mut UnixStream, mode: Mode) -> Vec<u8> {
    match mode {
        Mode::Advanced => {
            let mut len = [0u8; 4];
            s.read_exact(&mut len).unwrap();
            let mut p = vec![0; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut p).unwrap();
            p
        }
        _ => {
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            loop {
                s.read_exact(&mut b).unwrap();
                if b[0] == b'\n' {
                    return line;
                }
                line.push(b[0]);
            }
        }
    }
}

fn decode(p: &[u8], mode: Mode) -> Value {
    node_ipc::decode_payload(p, mode).unwrap()
}

fn cmd(c: &str) -> Value {
    Value::object([("cmd", Value::from(c))])
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(DEADLINE, tokio::task::spawn_blocking(f)).await.unwrap().unwrap()
}

#[tokio::test]
async fn handles_between_two_channels_are_acked_in_order() {
    for mode in [Mode::Advanced, Mode::Json] {
        let ((atx, _arx), (_btx, mut brx)) = pair(mode);
        let (h, mut other) = UnixStream::pair().unwrap();
        atx.send(&Value::from("m0")).unwrap();
        let reply = atx.send_handle(&Value::object([("i", Value::from(1))]), HandleType::NetSocket, h.into());
        atx.send(&Value::from("m2")).unwrap();
        assert_eq!(recv(&mut brx).await.decode().unwrap(), Value::from("m0"));
        let mut m = recv(&mut brx).await;
        assert_eq!(m.decode().unwrap(), Value::object([("i", Value::from(1))]));
        let got = m.take_handle().unwrap();
        assert_eq!(got.handle_type, "net.Socket");
        assert_eq!(recv(&mut brx).await.decode().unwrap(), Value::from("m2"));
        assert!(matches!(tokio::time::timeout(DEADLINE, reply).await.unwrap(), HandleOutcome::Acked(_)));
        // The received fd is the live other end of our socketpair.
        let mut s = UnixStream::from(got.fd);
        s.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        other.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
    }
}

#[tokio::test]
async fn nacked_handle_is_retried_then_returned() {
    for mode in [Mode::Advanced, Mode::Json] {
        let (tx, _rx, mut peer) = raw_peer(mode, Limits::default());
        let (h, _keep) = UnixStream::pair().unwrap();
        let raw = h.as_raw_fd();
        let reply = tx.send_handle(&Value::from("x"), HandleType::NetNative, h.into());
        tx.send(&Value::from("after")).unwrap();
        let nack = encode_frame(&cmd("NODE_HANDLE_NACK"), mode).unwrap();
        let frames = blocking(move || {
            let mut got = Vec::new();
            for _ in 0..4 {
                got.push(decode(&read_frame(&mut peer, mode), mode));
                peer.write_all(&nack).unwrap();
            }
            got.push(decode(&read_frame(&mut peer, mode), mode));
            got
        })
        .await;
        for f in &frames[..4] {
            assert_eq!(f.get("cmd").and_then(Value::as_str), Some("NODE_HANDLE"));
            assert_eq!(f.get("type").and_then(Value::as_str), Some("net.Native"));
        }
        assert_eq!(frames[4], Value::from("after"));
        match tokio::time::timeout(DEADLINE, reply).await.unwrap() {
            HandleOutcome::Nacked(fd) => assert_eq!(fd.as_raw_fd(), raw),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn peer_vanishing_mid_handshake_returns_the_fd() {
    let (tx, mut rx, mut peer) = raw_peer(Mode::Advanced, Limits::default());
    let (h, _keep) = UnixStream::pair().unwrap();
    let raw = h.as_raw_fd();
    let reply = tx.send_handle(&Value::from("x"), HandleType::NetSocket, h.into());
    let (h2, _keep2) = UnixStream::pair().unwrap();
    let raw2 = h2.as_raw_fd();
    let queued = tx.send_handle(&Value::from("y"), HandleType::NetSocket, h2.into());
    tx.send(&Value::from("queued")).unwrap();
    blocking(move || {
        read_frame(&mut peer, Mode::Advanced);
        drop(peer);
    })
    .await;
    match tokio::time::timeout(DEADLINE, reply).await.unwrap() {
        HandleOutcome::Closed(fd) => assert_eq!(fd.as_raw_fd(), raw),
        other => panic!("{other:?}"),
    }
    match tokio::time::timeout(DEADLINE, queued).await.unwrap() {
        HandleOutcome::Closed(fd) => assert_eq!(fd.as_raw_fd(), raw2),
        other => panic!("{other:?}"),
    }
    assert!(tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap().is_none());
    assert!(matches!(tx.send(&Value::Null), Err(Error::Closed)));
}

#[tokio::test]
async fn a_peer_that_stops_reading_gets_peer_not_reading() {
    let mut limits = Limits::default();
    limits.max_write_buffer = 256 * 1024;
    let (tx, _rx, _peer) = raw_peer(Mode::Advanced, limits);
    let chunk = Value::buffer(vec![7u8; 4096]);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let err = loop {
        match tx.send(&chunk) {
            Ok(()) => tokio::task::yield_now().await,
            Err(e) => break e,
        }
        assert!(tokio::time::Instant::now() < deadline, "buffer never filled");
    };
    assert!(matches!(err, Error::PeerNotReading { max: 262144, .. }), "{err:?}");
    assert!(tx.buffered() <= 256 * 1024);
}

#[tokio::test]
async fn oversized_frame_is_a_typed_error_and_ends_the_channel() {
    let mut limits = Limits::default();
    limits.max_frame_len = 1024;
    let (_tx, mut rx, mut peer) = raw_peer(Mode::Advanced, limits.clone());
    peer.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    match recv_err(&mut rx).await {
        Error::FrameTooLarge { len, max } => assert_eq!((len, max), (0xffff_ffff, 1024)),
        e => panic!("{e:?}"),
    }
    assert!(tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap().is_none());

    let (_tx, mut rx, mut peer) = raw_peer(Mode::Json, limits);
    peer.write_all(&[b'x'; 2000]).unwrap();
    assert!(matches!(recv_err(&mut rx).await, Error::FrameTooLarge { .. }));
}

async fn recv_err(rx: &mut Receiver) -> Error {
    match tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap() {
        Some(Err(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_json_line_is_a_decode_error_not_a_dead_channel() {
    let (_tx, mut rx, mut peer) = raw_peer(Mode::Json, Limits::default());
    peer.write_all(b"{nope}\n\n{\"ok\":1}\r\n").unwrap();
    assert!(matches!(recv(&mut rx).await.decode(), Err(Error::Json(_))));
    assert!(matches!(recv(&mut rx).await.decode(), Err(Error::Json(_))));
    assert_eq!(recv(&mut rx).await.decode().unwrap(), Value::object([("ok", Value::from(1))]));
}

#[tokio::test]
async fn handle_frame_without_fd_is_nacked_and_dropped() {
    for mode in [Mode::Advanced, Mode::Json] {
        let (_tx, mut rx, mut peer) = raw_peer(mode, Limits::default());
        let env = Value::object([
            ("cmd", Value::from("NODE_HANDLE")),
            ("type", Value::from("net.Socket")),
            ("msg", Value::from("lost")),
        ]);
        peer.write_all(&encode_frame(&env, mode).unwrap()).unwrap();
        peer.write_all(&encode_frame(&Value::from("next"), mode).unwrap()).unwrap();
        let reply = blocking(move || decode(&read_frame(&mut peer, mode), mode)).await;
        assert_eq!(reply, cmd("NODE_HANDLE_NACK"));
        assert_eq!(recv(&mut rx).await.decode().unwrap(), Value::from("next"));
    }
}

#[tokio::test]
async fn spurious_ack_is_ignored() {
    let (tx, mut rx, mut peer) = raw_peer(Mode::Advanced, Limits::default());
    peer.write_all(&encode_frame(&cmd("NODE_HANDLE_ACK"), Mode::Advanced).unwrap()).unwrap();
    peer.write_all(&encode_frame(&Value::from("hi"), Mode::Advanced).unwrap()).unwrap();
    assert_eq!(recv(&mut rx).await.decode().unwrap(), Value::from("hi"));
    tx.send(&Value::from("back")).unwrap();
    let got = blocking(move || decode(&read_frame(&mut peer, Mode::Advanced), Mode::Advanced)).await;
    assert_eq!(got, Value::from("back"));
}

#[tokio::test]
async fn writes_mirror_the_peer_version() {
    let (tx, mut rx, mut peer) = raw_peer(Mode::Advanced, Limits::default());
    peer.write_all(&[0, 0, 0, 3, 0xff, 0x0d, b'0']).unwrap();
    assert_eq!(recv(&mut rx).await.decode().unwrap(), Value::Null);
    assert_eq!(tx.version(), 13);
    tx.send(&Value::Bool(true)).unwrap();
    let got = blocking(move || read_frame(&mut peer, Mode::Advanced)).await;
    assert_eq!(got, vec![0xff, 0x0d, b'T']);
}

#[tokio::test]
async fn raw_payloads_are_relayed_byte_for_byte() {
    let ((atx, _arx), (_btx, mut brx)) = pair(Mode::Advanced);
    let msg = Value::object([
        ("type", Value::from(3)),
        ("uid", Value::from("abc")),
        ("data", Value::buffer(vec![0u8, 1, 2, 255])),
        ("x", Value::Double(-0.0)),
    ]);
    atx.send(&msg).unwrap();
    let got = recv(&mut brx).await;
    let payload = got.payload().clone();
    let ((ctx, _crx), (_dtx, mut drx)) = pair(Mode::Advanced);
    ctx.send_raw(&payload).unwrap();
    assert_eq!(recv(&mut drx).await.payload(), &payload);
    assert!(matches!(ctx.send_raw(b"\x00\x01"), Err(Error::InvalidRaw(_))));

    let ((jtx, _jrx0), (_jtx1, mut jrx)) = pair(Mode::Json);
    jtx.send_raw(br#"{"a":1}"#).unwrap();
    assert_eq!(recv(&mut jrx).await.payload().as_ref(), br#"{"a":1}"#);
    assert!(matches!(jtx.send_raw(b""), Err(Error::InvalidRaw(_))));
    assert!(matches!(jtx.send_raw(b"1\n2"), Err(Error::InvalidRaw(_))));
}

#[tokio::test]
async fn close_flushes_queued_messages_then_ends_both_sides() {
    let ((atx, mut arx), (_btx, mut brx)) = pair(Mode::Advanced);
    for i in 0..100 {
        atx.send(&Value::from(i)).unwrap();
    }
    atx.close();
    assert!(matches!(atx.send(&Value::Null), Err(Error::Closed)));
    for i in 0..100 {
        assert_eq!(recv(&mut brx).await.decode().unwrap(), Value::from(i));
    }
    assert!(tokio::time::timeout(DEADLINE, brx.recv()).await.unwrap().is_none());
    assert!(tokio::time::timeout(DEADLINE, arx.recv()).await.unwrap().is_none());
}

#[tokio::test]
async fn dropping_every_sender_closes_the_channel() {
    let ((atx, _arx), (_btx, mut brx)) = pair(Mode::Json);
    let clone = atx.clone();
    clone.send(&Value::from("one")).unwrap();
    drop(atx);
    assert_eq!(recv(&mut brx).await.decode().unwrap(), Value::from("one"));
    drop(clone);
    assert!(tokio::time::timeout(DEADLINE, brx.recv()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_a_multi_thread_runtime() {
    let ((atx, _arx), (_btx, mut brx)) = pair(Mode::Advanced);
    let big = Value::buffer(vec![1u8; 1 << 20]);
    let sender = tokio::spawn(async move {
        for _ in 0..8 {
            atx.send(&big).unwrap();
            tokio::time::sleep(Duration::from_millis(0)).await;
        }
        atx
    });
    for _ in 0..8 {
        assert_eq!(recv(&mut brx).await.decode().unwrap().as_bytes().unwrap().len(), 1 << 20);
    }
    drop(sender.await.unwrap());
}

/// An in-place upgrade of the parent: reading pauses at a frame boundary,
/// the snapshot carries the half-read frame and the unsent bytes, and a
/// channel adopted on the same socket continues the stream exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_and_an_adopted_channel_continue_the_stream() {
    for mode in [Mode::Json, Mode::Advanced] {
        let (a, mut peer) = UnixStream::pair().unwrap();
        peer.set_read_timeout(Some(DEADLINE)).unwrap();
        let fd = a.as_raw_fd();
        let (tx, mut rx) = Channel::new(OwnedFd::from(a), mode, Limits::default()).unwrap();
        let whole = encode_frame(&Value::from("first"), mode).unwrap();
        let next = encode_frame(&Value::from("second, split across the handover"), mode).unwrap();
        let cut = next.len() / 2;
        peer.write_all(&whole).unwrap();
        peer.write_all(&next[..cut]).unwrap();
        assert_eq!(recv(&mut rx).await.decode().unwrap(), Value::from("first"));
        tx.pause_reading();
        // Not quiet until the reader parked. It may have taken the half
        // frame (then the snapshot carries it) or parked before reading it
        // (then it is still in the socket for the new image): either way the
        // snapshot holds a prefix of the half frame and nothing else.
        let snap = loop {
            if let Some(s) = tx.snapshot() {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        assert!(next[..cut].starts_with(&snap.partial_in), "{mode:?}: {:?}", snap.partial_in);
        assert!(snap.unsent_out.is_empty());
        // The new image owns the same socket (here: a duplicate; the old
        // channel is never driven again).
        // SAFETY: dup of a descriptor the old channel keeps open.
        let dup = unsafe { libc::dup(fd) };
        assert!(dup >= 0);
        // SAFETY: a fresh descriptor from dup.
        let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dup) };
        std::mem::forget(tx);
        std::mem::forget(rx);
        let (tx2, mut rx2) = Channel::adopt(owned, mode, Limits::default(), snap).unwrap();
        peer.write_all(&next[cut..]).unwrap();
        assert_eq!(
            recv(&mut rx2).await.decode().unwrap(),
            Value::from("second, split across the handover"),
            "{mode:?}"
        );
        tx2.send(&Value::from("from the new image")).unwrap();
        assert_eq!(decode(&read_frame(&mut peer, mode), mode), Value::from("from the new image"));
    }
}

/// Bun's JSON channel marks internal messages with a leading 0x02: read
/// either way, written only when the channel is asked to.
#[tokio::test]
async fn bun_internal_mark() {
    let mut limits = Limits::default();
    limits.mark_internal = true;
    let (tx, mut rx, mut peer) = raw_peer(Mode::Json, limits);
    peer.write_all(b"\x02{\"cmd\":\"NODE_CLUSTER\",\"act\":\"online\",\"seq\":0}\n{\"a\":1}\n").unwrap();
    let m = recv(&mut rx).await;
    assert_eq!(m.decode().unwrap().get("act").and_then(|v| v.as_str()), Some("online"));
    assert_eq!(recv(&mut rx).await.payload().as_ref(), b"{\"a\":1}");
    tx.send(&Value::object([("cmd", Value::from("NODE_CLUSTER")), ("act", Value::from("disconnect"))]))
        .unwrap();
    tx.send(&Value::object([("cmd", Value::from("user"))])).unwrap();
    let peer = blocking(move || {
        assert_eq!(
            read_frame(&mut peer, Mode::Json),
            b"\x02{\"cmd\":\"NODE_CLUSTER\",\"act\":\"disconnect\"}"
        );
        assert_eq!(read_frame(&mut peer, Mode::Json), b"{\"cmd\":\"user\"}");
        peer
    })
    .await;
    drop(peer);
    // Without the option (Node peers), nothing is marked.
    let (tx, _rx, mut peer) = raw_peer(Mode::Json, Limits::default());
    tx.send(&cmd("NODE_CLUSTER")).unwrap();
    blocking(move || assert_eq!(read_frame(&mut peer, Mode::Json), b"{\"cmd\":\"NODE_CLUSTER\"}")).await;
}

#[tokio::test]
async fn queued_raw_frames_wait_for_flush_and_keep_their_order() {
    for mode in [Mode::Advanced, Mode::Json] {
        let (tx, _rx, mut peer) = raw_peer(mode, Limits::default());
        let payloads: Vec<Vec<u8>> =
            (0..5).map(|i| node_ipc::encode_payload(&Value::from(i), mode).unwrap()).collect();
        tx.send(&Value::from("first")).unwrap();
        for p in &payloads {
            tx.queue_raw(p).unwrap();
        }
        // Queued frames go out on the flush (or with whatever the writer task writes
        // next); a message sent the ordinary way after them keeps its place.
        tx.flush();
        tx.send(&Value::from("last")).unwrap();
        let got =
            blocking(move || (0..7).map(|_| decode(&read_frame(&mut peer, mode), mode)).collect::<Vec<_>>())
                .await;
        let mut want = vec![Value::from("first")];
        want.extend((0..5).map(Value::from));
        want.push(Value::from("last"));
        assert_eq!(got, want, "{mode:?}");
        assert!(matches!(tx.queue_raw(b""), Err(Error::InvalidRaw(_))));
    }
}

#[tokio::test]
async fn a_queued_frame_goes_out_with_the_next_ordinary_send() {
    // A relay that queued a frame and then sends an ordinary message to the same worker
    // before its flush: both go out, in order, even if the flush never came.
    let (tx, _rx, mut peer) = raw_peer(Mode::Advanced, Limits::default());
    let p = node_ipc::encode_payload(&Value::from("queued"), Mode::Advanced).unwrap();
    tx.queue_raw(&p).unwrap();
    tx.send(&Value::from("sent")).unwrap();
    let got = blocking(move || {
        (0..2).map(|_| decode(&read_frame(&mut peer, Mode::Advanced), Mode::Advanced)).collect::<Vec<_>>()
    })
    .await;
    assert_eq!(got, vec![Value::from("queued"), Value::from("sent")]);
}

#[tokio::test]
async fn bytes_behind_a_descriptor_in_one_burst_are_read() {
    // A stream read stops after the bytes a descriptor rode on, so a short read is not
    // always an empty socket: what follows must still be read without a new edge.
    for mode in [Mode::Advanced, Mode::Json] {
        let (_tx, mut rx, peer) = raw_peer(mode, Limits::default());
        let env = Value::object([
            ("cmd", Value::from("NODE_HANDLE")),
            ("type", Value::from("net.Socket")),
            ("msg", Value::from("with fd")),
        ]);
        let (h, _keep) = UnixStream::pair().unwrap();
        let frame = encode_frame(&env, mode).unwrap();
        let next = encode_frame(&Value::from("behind"), mode).unwrap();
        send_with_fd(&peer, &frame, h.as_raw_fd());
        (&peer).write_all(&next).unwrap();
        let mut m = recv(&mut rx).await;
        assert_eq!(m.decode().unwrap(), Value::from("with fd"));
        assert!(m.take_handle().is_some());
        assert_eq!(recv(&mut rx).await.decode().unwrap(), Value::from("behind"));
        // The peer stays silent from here on; `behind` arrived without any new edge.
        drop(peer);
    }
}

#[tokio::test]
async fn messages_arriving_one_by_one_are_each_delivered() {
    // Every frame alone is a short read that empties the socket: the reader must wait for
    // the next edge, and the next frame must raise it.
    let (tx, mut rx, mut peer) = raw_peer(Mode::Advanced, Limits::default());
    for i in 0..50 {
        peer.write_all(&encode_frame(&Value::from(i), Mode::Advanced).unwrap()).unwrap();
        assert_eq!(recv(&mut rx).await.decode().unwrap(), Value::from(i));
        if i % 10 == 0 {
            tx.send(&Value::from(i)).unwrap();
            let got = blocking({
                let mut p = peer.try_clone().unwrap();
                move || decode(&read_frame(&mut p, Mode::Advanced), Mode::Advanced)
            })
            .await;
            assert_eq!(got, Value::from(i));
        }
    }
    assert!(rx.try_recv().is_none());
}

fn send_with_fd(sock: &UnixStream, data: &[u8], fd: std::os::fd::RawFd) {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
        assert_eq!(libc::sendmsg(sock.as_raw_fd(), &msg, 0), data.len() as isize);
    }
}

#[tokio::test]
async fn a_full_socket_is_written_once_the_peer_reads_again() {
    // More than the socket holds: the writer must wait for room (its watch for writability
    // exists only then) and finish once the peer reads.
    let (tx, _rx, mut peer) = raw_peer(Mode::Advanced, Limits::default());
    let big = Value::buffer(vec![7u8; 256 * 1024]);
    for _ in 0..16 {
        tx.send(&big).unwrap();
    }
    let p = node_ipc::encode_payload(&Value::from("tail"), Mode::Advanced).unwrap();
    tx.queue_raw(&p).unwrap();
    tx.flush();
    let got = blocking(move || {
        let mut n = 0;
        loop {
            let f = decode(&read_frame(&mut peer, Mode::Advanced), Mode::Advanced);
            if f == Value::from("tail") {
                return n;
            }
            n += 1;
        }
    })
    .await;
    assert_eq!(got, 16);
    assert_eq!(tx.buffered(), 0);
}
