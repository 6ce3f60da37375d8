//! `pm2-axon-rpc` over axon `req`/`rep`, and pub/sub event frames.

use crate::{encode, pack_json_text, pack_str, unpack, Arg, Error, Frame};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `{type:'call', method, args}`: `args` are the call's arguments
    /// (the client's trailing callback is not among them).
    Call { method: String, args: Vec<Value> },
    /// `{type:'methods'}`: list the exposed methods.
    Methods,
    /// A well-framed message the RPC server answers with an error, as
    /// `pm2-axon-rpc` does (`.method required`, `.args required`).
    Invalid(String),
}

/// One request and the raw id to echo in its reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub req: Request,
    /// The req socket's message id, still packed (`s:<pid>:<n>`); the reply
    /// carries these exact bytes so the client finds its callback.
    pub id: Vec<u8>,
}

/// Reads a request frame. The rep socket pops the last argument as the id,
/// so a frame needs the message and the id; fewer is a protocol error
/// (the connection is closed), while a message of the wrong shape gets an
/// error reply.
pub fn parse_request(mut args: Vec<Vec<u8>>) -> Result<Incoming, Error> {
    if args.len() < 2 {
        return Err(Error::Rpc(format!(
            "a request needs a message and an id, got {} argument(s)",
            args.len()
        )));
    }
    let id = args.pop().unwrap_or_default();
    let msg = unpack(&args[0])?;
    let req = match msg {
        Arg::Json(Value::Object(mut o)) => {
            if o.get("type").and_then(Value::as_str) == Some("methods") {
                Request::Methods
            } else {
                match (o.remove("method"), o.remove("args")) {
                    (Some(Value::String(m)), Some(Value::Array(a))) if !m.is_empty() => {
                        Request::Call { method: m, args: a }
                    }
                    (Some(Value::String(m)), _) if !m.is_empty() => Request::Invalid(".args required".into()),
                    _ => Request::Invalid(".method required".into()),
                }
            }
        }
        _ => Request::Invalid(".method required".into()),
    };
    Ok(Incoming { req, id })
}

/// A successful reply: `results_json` is the JSON array of the callback's
/// arguments after `err` (usually one element).
pub fn reply_ok(id: &[u8], results_json: &str) -> Result<Frame, Error> {
    let mut body = String::with_capacity(results_json.len() + 10);
    body.push_str("{\"args\":");
    body.push_str(results_json);
    body.push('}');
    encode(&[pack_json_text(&body), id.to_vec()])
}

/// An error reply; the client turns it into `new Error(message)`.
pub fn reply_err(id: &[u8], message: &str) -> Result<Frame, Error> {
    let body = serde_json::json!({ "error": message }).to_string();
    encode(&[pack_json_text(&body), id.to_vec()])
}

/// The reply to `{type:'methods'}`: `{methods: {name: {name, params}}}`.
pub fn reply_methods(id: &[u8], names: &[&str]) -> Result<Frame, Error> {
    let mut m = serde_json::Map::new();
    for n in names {
        m.insert((*n).to_owned(), serde_json::json!({ "name": n, "params": [] }));
    }
    let body = serde_json::json!({ "methods": m }).to_string();
    encode(&[pack_json_text(&body), id.to_vec()])
}

/// A pub/sub event as `pub-emitter` sends it: `[s:topic, j:data]`.
pub fn event(topic: &str, data_json: &str) -> Result<Frame, Error> {
    encode(&[pack_str(topic), pack_json_text(data_json)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{pack_value, Decoder};
    use serde_json::json;

    fn call(method: &str, args: Value) -> Vec<Vec<u8>> {
        vec![pack_value(&json!({"type": "call", "method": method, "args": args})), pack_str("4242:7")]
    }

    #[test]
    fn parses_a_call_and_keeps_the_id_bytes() {
        let inc = parse_request(call("getMonitorData", json!([{}]))).unwrap();
        assert_eq!(inc.req, Request::Call { method: "getMonitorData".into(), args: vec![json!({})] });
        assert_eq!(inc.id, b"s:4242:7");
        let methods = parse_request(vec![pack_value(&json!({"type": "methods"})), pack_str("1:0")]).unwrap();
        assert_eq!(methods.req, Request::Methods);
    }

    #[test]
    fn wrong_shapes_get_error_replies_not_closes() {
        for (msg, why) in [
            (pack_value(&json!({"type": "call"})), ".method required"),
            (pack_value(&json!({"type": "call", "method": "x"})), ".args required"),
            (pack_value(&json!([1])), ".method required"),
            (pack_str("hello"), ".method required"),
            (b"\x00blob".to_vec(), ".method required"),
        ] {
            let inc = parse_request(vec![msg, pack_str("1:0")]).unwrap();
            assert_eq!(inc.req, Request::Invalid(why.into()));
        }
    }

    #[test]
    fn protocol_errors_close() {
        assert!(parse_request(vec![pack_str("1:0")]).is_err());
        assert!(parse_request(vec![b"j:{nope".to_vec(), pack_str("1:0")]).is_err());
    }

    #[test]
    fn replies_decode_as_the_client_expects() {
        let f = reply_ok(b"s:9:1", "[[{\"pm_id\":0}]]").unwrap();
        let mut d = Decoder::new(1 << 20);
        d.extend(&f);
        let args = d.next_frame().unwrap().unwrap();
        assert_eq!(unpack(&args[0]).unwrap(), Arg::Json(json!({"args": [[{"pm_id": 0}]]})));
        assert_eq!(unpack(&args[1]).unwrap(), Arg::Str("9:1".into()));
        let f = reply_err(b"s:9:2", "nope \"quoted\"").unwrap();
        let mut d = Decoder::new(1 << 20);
        d.extend(&f);
        let args = d.next_frame().unwrap().unwrap();
        assert_eq!(unpack(&args[0]).unwrap(), Arg::Json(json!({"error": "nope \"quoted\""})));
        let f = event("log:out", "{\"data\":\"x\"}").unwrap();
        let mut d = Decoder::new(1 << 20);
        d.extend(&f);
        let args = d.next_frame().unwrap().unwrap();
        assert_eq!(unpack(&args[0]).unwrap(), Arg::Str("log:out".into()));
    }
}
