//! The `WorkerHost` contract of the cluster primary, over a real socket
//! pair: the test plays the worker's end of the channel.

use super::*;
use corral_proto::{AppSpec, ExecMode};
use node_ipc::{Channel, Limits, Mode};
use std::time::Duration;

fn app(sticky: Option<bool>) -> AppSpec {
    AppSpec {
        name: "web".into(),
        script: "app.js".into(),
        exec_mode: ExecMode::Cluster,
        sticky,
        ..Default::default()
    }
}

/// Attaches a worker to `p`; returns the worker's end and the events.
fn attach(p: &Primary, app: &AppSpec) -> (u32, Sender, Receiver, mpsc::UnboundedReceiver<WorkerEvent>) {
    let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let (tx, rx) = Channel::new(a.into(), Mode::Advanced, Limits::default()).expect("parent end");
    let (wtx, wrx) = Channel::new(b.into(), Mode::Advanced, Limits::default()).expect("worker end");
    let wid = p.alloc_worker_id();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    p.attach(wid, WorkerInfo { pm_id: 0, pid: 0, label: "web:0", app }, tx, rx, ev_tx);
    (wid, wtx, wrx, ev_rx)
}

fn cluster(act: &str) -> Value {
    Value::object([
        ("cmd", Value::from("NODE_CLUSTER")),
        ("act", Value::from(act)),
        ("seq", Value::from(0u32)),
    ])
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("in time").expect("open")
}

async fn next_msg(rx: &mut Receiver) -> Value {
    let m = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("in time").expect("open");
    m.expect("frame").decode().expect("value")
}

#[tokio::test]
async fn worker_ids_are_unique() {
    let p = Primary::new(0, Duration::from_secs(1));
    let a = p.alloc_worker_id();
    let b = p.alloc_worker_id();
    assert_ne!(a, b);
}

#[tokio::test]
async fn what_the_worker_says_becomes_worker_events() {
    let p = Primary::new(0, Duration::from_secs(1));
    let spec = app(None);
    let (_wid, wtx, _wrx, mut ev) = attach(&p, &spec);
    wtx.send(&cluster("online")).unwrap();
    assert_eq!(next(&mut ev).await, WorkerEvent::Online);
    wtx.send(&cluster("listening")).unwrap();
    assert_eq!(next(&mut ev).await, WorkerEvent::Listening);
    wtx.send(&Value::from("ready")).unwrap();
    assert_eq!(next(&mut ev).await, WorkerEvent::Ready);
    wtx.send(&Value::object([("node_version", Value::from("22.1.0"))])).unwrap();
    assert_eq!(next(&mut ev).await, WorkerEvent::NodeVersion("22.1.0".into()));
}

#[tokio::test]
async fn a_plain_worker_is_retired_by_disconnect_and_asked_on_its_channel() {
    let p = Primary::new(0, Duration::from_secs(1));
    let spec = app(None);
    let (wid, _wtx, mut wrx, _ev) = attach(&p, &spec);
    assert_eq!(p.retirement(wid), Retirement { finish_within: None, disconnect: true });
    assert_eq!(p.open_clients(wid), 0);
    p.drain(wid, true);
    assert!(p.ask_exit(wid, ExitRequest::Disconnect));
    let m = next_msg(&mut wrx).await;
    assert_eq!(m.get("act").and_then(|a| a.as_str()), Some("disconnect"));
    assert!(p.ask_exit(wid, ExitRequest::Shutdown));
    assert_eq!(next_msg(&mut wrx).await.as_str(), Some("shutdown"));
}

#[tokio::test]
async fn a_socketio_worker_keeps_its_sessions_and_skips_disconnect() {
    let p = Primary::new(0, Duration::from_millis(1234));
    let spec = app(Some(true));
    let (wid, wtx, _wrx, mut ev) = attach(&p, &spec);
    wtx.send(&Value::object([("type", Value::from("sticky:connection")), ("data", Value::from("sid1"))]))
        .unwrap();
    // The first sticky message makes the worker serve sticky traffic.
    assert_eq!(next(&mut ev).await, WorkerEvent::Serving);
    assert_eq!(
        p.retirement(wid),
        Retirement { finish_within: Some(Duration::from_millis(1234)), disconnect: false }
    );
    assert_eq!(p.open_clients(wid), 1);
}

#[tokio::test]
async fn a_detached_worker_is_forgotten() {
    let p = Primary::new(0, Duration::from_secs(1));
    let spec = app(None);
    let (wid, _wtx, _wrx, _ev) = attach(&p, &spec);
    p.detach(wid, false);
    assert!(!p.ask_exit(wid, ExitRequest::Disconnect));
    assert!(p.reg().workers.is_empty());
    assert!(p.reg().apps.is_empty(), "the last worker of an app takes its state with it");
}
