//! End-to-end tests against real `node` children spawned with `ChildChannel`.

mod common;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{describe, hex, recv, spawn_node, vectors, DEADLINE};
use node_ipc::{json, v8, DecodeOptions, HandleOutcome, HandleType, Limits, Mode, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn wait_exit(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    tokio::time::timeout(DEADLINE, child.wait()).await.expect("child did not exit").unwrap()
}

#[tokio::test]
async fn advanced_frames_are_read_by_node_and_echoed_identically() {
    let (mut child, tx, mut rx) = spawn_node("echo.js", Mode::Advanced, None, Limits::default());
    let keep = DecodeOptions { keep_refs: true, ..Default::default() };
    for c in vectors().iter().filter(|c| c.name != "undefined") {
        let payload = &c.frame[4..];
        let value = v8::decode_with(payload, &keep).unwrap();
        tx.send(&value).unwrap();
        let desc = recv(&mut rx).await.decode().unwrap();
        assert_eq!(desc.get("desc").and_then(Value::as_str), Some(c.desc.as_str()), "{}", c.name);
        // Node's deserializer may rebuild a packed array as a holey one, so
        // its echo is compared by value (our bytes were checked against
        // Node's serializer in conformance.rs).
        let echo = recv(&mut rx).await.decode().unwrap();
        assert_eq!(describe(echo.get("echo").unwrap()), c.desc, "{}: echo differs", c.name);
    }
    // And what Node sends on its own matches the serializer vectors.
    tx.send(&Value::object([("cmd", Value::from("send-cases"))])).unwrap();
    for c in vectors().iter().filter(|c| c.name != "undefined" && !c.desc.starts_with("big:")) {
        let m = recv(&mut rx).await;
        assert_eq!(hex(m.payload()), hex(&c.frame[4..]), "{}: process.send bytes", c.name);
    }
    assert_eq!(recv(&mut rx).await.decode().unwrap(), Value::from("cases-done"));
    tx.send(&Value::from("exit")).unwrap();
    assert!(tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap().is_none());
    assert!(wait_exit(&mut child).await.success());
}

#[tokio::test]
async fn json_lines_are_read_by_node_and_echoed_identically() {
    let (mut child, tx, mut rx) = spawn_node("echo.js", Mode::Json, None, Limits::default());
    let mut sent = 0;
    for c in vectors().iter().filter(|c| c.name != "undefined") {
        let value = v8::decode(&c.frame[4..]).unwrap();
        let line = match json::encode(&value) {
            Ok(l) => l,
            Err(_) => {
                // Only what makes JSON.stringify throw may fail: BigInts and cycles.
                assert!(
                    c.desc.contains("big:")
                        || c.desc.contains("<cycle>")
                        || c.desc.contains("BigInt64Array")
                        || c.desc.contains("BigUint64Array"),
                    "{}: unexpected error",
                    c.name
                );
                continue;
            }
        };
        tx.send(&value).unwrap();
        sent += 1;
        let desc = recv(&mut rx).await;
        let echo = recv(&mut rx).await;
        // Node re-stringifies what it parsed: the same text means our writer is JSON.stringify.
        let wrapped = [&b"{\"echo\":"[..], &line, b"}"].concat();
        assert_eq!(String::from_utf8_lossy(echo.payload()), String::from_utf8_lossy(&wrapped), "{}", c.name);
        // Lone surrogates decode lossily (U+FFFD), so only compare well-formed text.
        if let (Ok(parsed), false) = (json::decode(&line), c.desc.contains("\\ud8")) {
            let d = desc.decode().unwrap();
            assert_eq!(d.get("desc").and_then(Value::as_str), Some(describe(&parsed).as_str()), "{}", c.name);
        }
    }
    assert!(sent > 70);
    tx.send(&Value::from("exit")).unwrap();
    assert!(tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap().is_none());
    assert!(wait_exit(&mut child).await.success());
}

async fn http_over_handed_socket(mode: Mode) {
    let (mut child, tx, mut rx) = spawn_node("http_child.js", mode, None, Limits::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    for round in 0..3 {
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server_side, _) = listener.accept().unwrap();
        let tag = format!("r{round}");
        let msg = Value::object([("tag", Value::from(tag.as_str()))]);
        match tx.send_handle(&msg, HandleType::NetSocket, OwnedFd::from(server_side)).await {
            HandleOutcome::Acked(fd) => drop(fd),
            other => panic!("handle not acked: {other:?}"),
        }
        let got = recv(&mut rx).await.decode().unwrap();
        assert_eq!(got.get("got").and_then(Value::as_str), Some(tag.as_str()));
        assert_eq!(got.get("handle").and_then(Value::as_str), Some("Socket"));
        client.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut resp = Vec::new();
        tokio::time::timeout(DEADLINE, client.read_to_end(&mut resp)).await.unwrap().unwrap();
        let resp = String::from_utf8_lossy(&resp);
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
        assert!(resp.ends_with(&format!("hello {tag} /x")), "{resp}");
    }
    tx.close();
    assert!(tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap().is_none());
    child.kill().await.ok();
}

#[tokio::test]
async fn tcp_socket_handed_to_node_serves_http_advanced() {
    http_over_handed_socket(Mode::Advanced).await;
}

#[tokio::test]
async fn tcp_socket_handed_to_node_serves_http_json() {
    http_over_handed_socket(Mode::Json).await;
}

async fn burst(mode: Mode) {
    let (mut child, tx, mut rx) = spawn_node("burst_child.js", mode, None, Limits::default());
    let mut replies = Vec::new();
    let mut keep = Vec::new();
    let mut expected = Vec::new();
    for i in 0..200 {
        let msg = Value::object([("i", Value::from(i))]);
        if i % 3 != 1 {
            let (a, b) = UnixStream::pair().unwrap();
            keep.push(b);
            replies.push(tx.send_handle(&msg, HandleType::NetSocket, OwnedFd::from(a)));
            expected.push(format!("h{i}"));
        } else {
            tx.send(&msg).unwrap();
            expected.push(format!("m{i}"));
        }
    }
    tx.send(&Value::object([("done", Value::Bool(true))])).unwrap();
    for r in replies {
        match tokio::time::timeout(DEADLINE, r).await.unwrap() {
            HandleOutcome::Acked(_) => {}
            other => panic!("{other:?}"),
        }
    }
    let got = recv(&mut rx).await.decode().unwrap();
    let got: Vec<String> = got
        .get("got")
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, expected);
    assert_eq!(tx.buffered(), 0);
    child.kill().await.ok();
}

#[tokio::test]
async fn burst_of_handles_and_messages_keeps_order_advanced() {
    burst(Mode::Advanced).await;
}

#[tokio::test]
async fn burst_of_handles_and_messages_keeps_order_json() {
    burst(Mode::Json).await;
}

async fn handle_from_child(mode: Mode) {
    let (mut child, tx, mut rx) = spawn_node("send_server_child.js", mode, None, Limits::default());
    let mut first = recv(&mut rx).await;
    let port = first.decode().unwrap().get("port").and_then(Value::as_i64).unwrap();
    assert_eq!(first.fields().unwrap().cmd.unwrap().as_str().unwrap(), "NODE_HANDLE");
    let h = first.take_handle().expect("fd with the server");
    assert_eq!(h.handle_type, "net.Server");
    let listener = std::net::TcpListener::from(h.fd);
    assert_eq!(listener.local_addr().unwrap().port() as i64, port);
    // Node holds 'after' back until we ACK: its arrival proves the ACK.
    assert_eq!(recv(&mut rx).await.decode().unwrap(), Value::from("after"));
    tx.send(&Value::from("exit")).unwrap();
    assert!(wait_exit(&mut child).await.success());
}

#[tokio::test]
async fn handle_sent_by_child_is_acked_advanced() {
    handle_from_child(Mode::Advanced).await;
}

#[tokio::test]
async fn handle_sent_by_child_is_acked_json() {
    handle_from_child(Mode::Json).await;
}

#[tokio::test]
async fn cluster_worker_reports_online_and_exits_when_channel_closes() {
    for mode in [Mode::Advanced, Mode::Json] {
        let (mut child, tx, mut rx) = spawn_node("cluster_child.js", mode, Some("7"), Limits::default());
        let online = recv(&mut rx).await;
        let f = online.fields().unwrap();
        assert!(f.is_internal());
        assert!(f.cmd.unwrap().eq_str("NODE_CLUSTER"));
        assert!(f.act.unwrap().eq_str("online"));
        assert_eq!(f.seq.unwrap().as_i64(), Some(0));
        if mode == Mode::Advanced {
            // Node's exact bytes for {cmd:'NODE_CLUSTER',act:'online',seq:0}.
            assert_eq!(
                hex(online.payload()),
                "ff0f6f2203636d64220c4e4f44455f434c55535445522203616374\
                 22066f6e6c696e6522037365714900"
                    .to_string()
                    + "7b03"
            );
        }
        let hello = recv(&mut rx).await.decode().unwrap();
        assert_eq!(hello.get("isWorker"), Some(&Value::Bool(true)));
        assert_eq!(hello.get("id").and_then(Value::as_i64), Some(7));
        tx.close();
        let status = wait_exit(&mut child).await;
        assert_eq!(status.code(), Some(0));
        assert!(tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn child_fd_and_env_are_set_up() {
    let chan = node_ipc::ChildChannel::new(Mode::Json).unwrap().child_fd(5);
    let mut cmd = std::process::Command::new(common::node_bin());
    cmd.args(["-e", "process.send({fd: process.env.NODE_CHANNEL_FD === undefined, open: require('fs').readdirSync('/proc/self/fd').map(Number).filter(n => n > 2).length})"]);
    chan.apply(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let (_tx, mut rx) = node_ipc::Channel::new(chan.into_parent(), Mode::Json, Limits::default()).unwrap();
    let m = recv(&mut rx).await.decode().unwrap();
    // Node deletes NODE_CHANNEL_FD from process.env once it has opened the channel.
    assert_eq!(m.get("fd"), Some(&Value::Bool(true)));
    assert!(m.get("open").and_then(Value::as_i64).is_some());
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}

#[tokio::test]
async fn peer_exit_closes_channel_and_returns_pending_handle() {
    let (mut child, tx, mut rx) = spawn_node("cluster_child.js", Mode::Advanced, None, Limits::default());
    // Without NODE_UNIQUE_ID the script still runs; wait for its first message.
    let _ = recv(&mut rx).await;
    child.kill().await.unwrap();
    assert!(tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap().is_none());
    let (a, _b) = UnixStream::pair().unwrap();
    let raw = a.as_raw_fd();
    match tx.send_handle(&Value::Null, HandleType::NetSocket, a.into()).await {
        HandleOutcome::Failed(node_ipc::Error::Closed, fd) | HandleOutcome::Closed(fd) => {
            assert_eq!(fd.as_raw_fd(), raw)
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(tx.send(&Value::Null), Err(node_ipc::Error::Closed)));
    let _ = Duration::ZERO;
}
