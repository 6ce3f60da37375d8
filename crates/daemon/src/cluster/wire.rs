//! Messages of Node's cluster protocol as the primary writes them.

use node_ipc::Value;
use std::sync::atomic::{AtomicU64, Ordering};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// The primary's message counter (one for all workers, as Node's).
pub fn next_seq() -> u64 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// `{cmd: 'NODE_CLUSTER', ...fields, seq}`.
pub fn cluster_msg(fields: Vec<(&str, Value)>) -> Value {
    let mut all = vec![("cmd", Value::from("NODE_CLUSTER"))];
    all.extend(fields);
    all.push(("seq", Value::from(next_seq())));
    Value::object(all)
}

/// JavaScript's `String(v)` for the scalars a listener key is made of.
pub fn js_string(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Undefined) => "undefined".into(),
        Some(Value::Null) => "null".into(),
        Some(v) => match v.as_str() {
            Some(s) => s.to_string(),
            None => match v.as_f64() {
                Some(n) => node_ipc::json::js_number_string(n),
                None => match v.as_bool() {
                    Some(b) => b.to_string(),
                    None => "[object Object]".into(),
                },
            },
        },
    }
}

/// The counter's next value (an in-place upgrade hands it over).
pub fn peek_seq() -> u64 {
    SEQ.load(Ordering::Relaxed)
}

/// Continues the counter of the image that handed over.
pub fn resume_seq(next: u64) {
    SEQ.fetch_max(next, Ordering::Relaxed);
}
