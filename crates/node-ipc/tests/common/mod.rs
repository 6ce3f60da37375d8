//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use node_ipc::{Channel, ChildChannel, Incoming, Limits, Mode, Receiver, Sender, Value, ViewKind};

pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("node")
}

pub fn node_bin() -> String {
    std::env::var("NODE").unwrap_or_else(|_| "node".to_string())
}

/// One case of tests/node/cases.js: Node's own frame and the value's description.
pub struct Vector {
    pub name: String,
    pub frame: Vec<u8>,
    pub desc: String,
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

pub fn vectors() -> Vec<Vector> {
    let out = std::process::Command::new(node_bin())
        .arg("--expose-internals")
        .arg(node_dir().join("vectors.js"))
        .output()
        .expect("run node");
    assert!(out.status.success(), "vectors.js failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| Vector {
            name: c["name"].as_str().unwrap().to_string(),
            frame: unhex(c["frame"].as_str().unwrap()),
            desc: c["desc"].as_str().unwrap().to_string(),
        })
        .collect()
}

/// Spawns `node <script>` with a channel in `mode`.
pub fn spawn_node(
    script: &str,
    mode: Mode,
    unique_id: Option<&str>,
    limits: Limits,
) -> (tokio::process::Child, Sender, Receiver) {
    let mut chan = ChildChannel::new(mode).unwrap();
    if let Some(id) = unique_id {
        chan = chan.unique_id(id);
    }
    let mut cmd = tokio::process::Command::new(node_bin());
    cmd.arg(node_dir().join(script)).stdin(Stdio::null()).kill_on_drop(true);
    chan.apply_tokio(&mut cmd);
    let child = cmd.spawn().expect("spawn node");
    let (tx, rx) = Channel::new(chan.into_parent(), mode, limits).unwrap();
    (child, tx, rx)
}

pub async fn recv(rx: &mut Receiver) -> Incoming {
    match tokio::time::timeout(DEADLINE, rx.recv()).await {
        Ok(Some(Ok(m))) => m,
        Ok(Some(Err(e))) => panic!("channel error: {e}"),
        Ok(None) => panic!("channel closed"),
        Err(_) => panic!("no message within {DEADLINE:?}"),
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn jstr(s: &node_ipc::JsString) -> String {
    let mut out = Vec::new();
    node_ipc::json::encode_into(&Value::String(s.clone()), &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn view_name(kind: ViewKind) -> &'static str {
    match kind {
        ViewKind::Int8 => "Int8Array",
        ViewKind::Uint8 => "Uint8Array",
        ViewKind::Uint8Clamped => "Uint8ClampedArray",
        ViewKind::Int16 => "Int16Array",
        ViewKind::Uint16 => "Uint16Array",
        ViewKind::Int32 => "Int32Array",
        ViewKind::Uint32 => "Uint32Array",
        ViewKind::Float32 => "Float32Array",
        ViewKind::Float64 => "Float64Array",
        ViewKind::DataView => "DataView",
        ViewKind::Buffer => "Buffer",
        ViewKind::BigInt64 => "BigInt64Array",
        ViewKind::BigUint64 => "BigUint64Array",
        _ => "?",
    }
}

/// Mirror of tests/node/describe.js.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Undefined | Value::Hole => "undefined".into(),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => format!("n:{i}"),
        Value::Double(d) => {
            if *d == 0.0 && d.is_sign_negative() {
                "n:-0".into()
            } else {
                format!("n:{}", node_ipc::json::js_number_string(*d))
            }
        }
        Value::BigInt(b) => format!("big:{}", node_ipc::json::bigint_decimal(b)),
        Value::String(s) => format!("s:{}", jstr(s)),
        Value::Ref(_) => "<cycle>".into(),
        Value::Buffer(b) => format!("Buffer<{}>", hex(b)),
        Value::TypedArray { kind, bytes } => format!("{}<{}>", view_name(*kind), hex(bytes)),
        Value::ArrayBuffer(b) => format!("ArrayBuffer<{}>", hex(b)),
        Value::Date(ms) => format!("Date:{}", node_ipc::json::js_number_string(*ms)),
        Value::RegExp { source, flags } => format!("RegExp:{}:{}", source.as_str(), flags),
        Value::Map(m) => format!(
            "Map{{{}}}",
            m.iter().map(|(k, x)| format!("{}=>{}", describe(k), describe(x))).collect::<Vec<_>>().join(",")
        ),
        Value::Set(s) => format!("Set{{{}}}", s.iter().map(describe).collect::<Vec<_>>().join(",")),
        Value::Error(e) => {
            let mut s = format!(
                "Error:{}:{}",
                e.kind.name(),
                e.message.as_ref().map(jstr).unwrap_or_else(|| "\"\"".into())
            );
            if let Some(c) = &e.cause {
                s.push_str(&format!(":cause={}", describe(c)));
            }
            s.push_str(&format!(
                ":stack={}",
                e.stack.as_ref().map(jstr).unwrap_or_else(|| "undefined".into())
            ));
            s
        }
        Value::Wrapper(inner) => format!("Wrap:{}", describe(inner)),
        Value::HostObject(inner) => describe(inner),
        Value::Array(e) => format!("[{}]", e.iter().map(describe_elem).collect::<Vec<_>>().join(",")),
        Value::ArrayWithProps { elements, props } => format!(
            "[{}]+{{{}}}",
            elements.iter().map(describe_elem).collect::<Vec<_>>().join(","),
            props.iter().map(|(k, x)| format!("{}:{}", jstr(k), describe(x))).collect::<Vec<_>>().join(",")
        ),
        Value::SparseArray { length, props } => {
            let mut parts = vec!["<hole>".to_string(); *length as usize];
            let mut extra = Vec::new();
            for (k, x) in props {
                match k.as_str().parse::<usize>() {
                    Ok(i) if i < parts.len() => parts[i] = describe(x),
                    _ => extra.push(format!("{}:{}", jstr(k), describe(x))),
                }
            }
            let mut s = format!("[{}]", parts.join(","));
            if !extra.is_empty() {
                s.push_str(&format!("+{{{}}}", extra.join(",")));
            }
            s
        }
        Value::Object(p) => {
            format!(
                "{{{}}}",
                p.iter().map(|(k, x)| format!("{}:{}", jstr(k), describe(x))).collect::<Vec<_>>().join(",")
            )
        }
        _ => "?".into(),
    }
}

fn describe_elem(v: &Value) -> String {
    if matches!(v, Value::Hole) {
        "<hole>".into()
    } else {
        describe(v)
    }
}
