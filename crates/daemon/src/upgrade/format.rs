//! The handover document: everything a new image of the daemon needs to go
//! on where the old one stopped, besides the descriptors themselves (which
//! survive `execve` because their close-on-exec flag was cleared; the
//! document names them by number).
//!
//! Versioned: `version` is the format's number. A new binary adopts every
//! version from [`OLDEST_ADOPTED`] to [`FORMAT_VERSION`] (fields added since
//! carry `#[serde(default)]`), and refuses anything else with a message that
//! says which versions it knows; the old image then resumes (see the module
//! above). Pure: no descriptor is touched here.

use corral_proto::ProcInfo;
use serde::{Deserialize, Serialize};

/// The format this binary writes.
pub const FORMAT_VERSION: u32 = 1;
/// The oldest format this binary adopts.
pub const OLDEST_ADOPTED: u32 = 1;

/// The environment variable that carries the document's descriptor (a
/// memfd) to the new image.
pub const ENV_FD: &str = "CORRAL_HANDOVER_FD";
/// Set to run the binary as a probe: it prints [`probe_line`] and exits.
pub const ENV_PROBE: &str = "CORRAL_HANDOVER_PROBE";

/// What a binary prints when probed: the range of formats it adopts.
pub fn probe_line() -> String {
    format!("corral-handover {OLDEST_ADOPTED} {FORMAT_VERSION}")
}

/// Reads a probe's output: the range `(oldest, newest)` it adopts.
pub fn parse_probe(out: &str) -> Option<(u32, u32)> {
    let line = out.lines().find(|l| l.starts_with("corral-handover "))?;
    let mut it = line.split_whitespace().skip(1);
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    Some((a, b))
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Handover {
    pub version: u32,
    /// Corral version of the image that wrote it.
    pub from_version: String,
    /// The binary of the image that wrote it, open: where to go back to when
    /// the new image cannot adopt.
    pub fallback_exe_fd: Option<i32>,
    /// The path the daemon was first started from (the default binary of
    /// the next update).
    #[serde(default)]
    pub start_path: String,
    /// corral.sock, rpc.sock, pub.sock.
    pub control_fd: i32,
    pub rpc_fd: i32,
    pub pub_fd: i32,
    /// The CLI connection that asked for the update: answered by whichever
    /// image ends up running.
    pub requester_fd: Option<i32>,
    /// The next pm_id (the table's counter) and worker id.
    pub next_id: u32,
    pub next_wid: u32,
    /// The cluster primary's message counter.
    pub msg_seq: u64,
    #[serde(default)]
    pub procs: Vec<ProcHandover>,
    #[serde(default)]
    pub listeners: Vec<ListenerHandover>,
    #[serde(default)]
    pub sticky_ports: Vec<PortHandover>,
    #[serde(default)]
    pub sticky_apps: Vec<StickyAppHandover>,
    /// Set by a new image that could not adopt, before it went back to the
    /// old binary: reported to the CLI.
    #[serde(default)]
    pub failure: Option<String>,
    /// When the update started (ms since the epoch), for its wall time.
    #[serde(default)]
    pub started_ms: u64,
    /// The daemon's process title (argv[0]): kept by every image, whatever
    /// path or script the new binary was started through.
    #[serde(default)]
    pub title: String,
    /// Control connections between two requests (after their hello).
    #[serde(default)]
    pub control_conns: Vec<i32>,
    /// Sockets of apps' `listen_fds` (added after version 1 was first
    /// written: absent in older documents).
    #[serde(default)]
    pub activation: Vec<ActivationHandover>,
    /// The multi-host bridge's state (same node id, incarnation, sequence, stream
    /// position): to the other nodes the update is invisible. Absent without a bridge and
    /// in documents of images before it was added.
    #[serde(default)]
    pub bridge: Option<crate::multihost::Resume>,
}

/// A socket bound for an app's `listen_fds` (socket activation).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ActivationHandover {
    pub app: String,
    pub addr: String,
    pub fd: i32,
    /// pm_ids holding it (it is passed to their next launches).
    pub holders: Vec<u32>,
}

/// One process of the table.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ProcHandover {
    pub info: ProcInfo,
    /// Its child, when one runs.
    pub child: Option<ChildHandover>,
    /// A crash restart was waiting: it runs this many ms after adoption.
    #[serde(default)]
    pub restart_in_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ChildHandover {
    pub pid: i32,
    pub out_fd: Option<i32>,
    pub err_fd: Option<i32>,
    pub stdin_fd: Option<i32>,
    pub ipc: Option<IpcHandover>,
}

/// A worker channel at a frame boundary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct IpcHandover {
    pub wid: u32,
    pub fd: i32,
    /// "json" or "advanced".
    pub mode: String,
    pub v8_version: u32,
    /// Bytes of a frame read half.
    #[serde(default)]
    pub partial_in: Vec<u8>,
    /// Bytes queued for the worker and not written yet.
    #[serde(default)]
    pub unsent_out: Vec<u8>,
    /// The worker is draining (stopping or replaced).
    #[serde(default)]
    pub draining: bool,
}

/// A cluster listener shared by an app's workers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ListenerHandover {
    pub app: String,
    /// Node's listener key.
    pub key: String,
    pub fd: i32,
    /// "tcp" or "unix".
    pub kind: String,
    /// The socket path of a unix listener.
    #[serde(default)]
    pub path: Option<String>,
    /// Worker ids that joined it.
    pub members: Vec<u32>,
}

/// A sticky balancer port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PortHandover {
    pub port: u16,
    pub fd: i32,
}

/// Socket.IO state of one cluster app: which worker holds which session,
/// which adapter uid is which worker's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct StickyAppHandover {
    pub app: String,
    pub port: u16,
    pub enabled: bool,
    pub disabled: bool,
    pub group: Option<String>,
    /// Engine.IO sid -> worker id.
    #[serde(default)]
    pub sessions: Vec<(String, u32)>,
    /// Workers ready for sticky traffic.
    #[serde(default)]
    pub ready: Vec<u32>,
    /// Adapter uid (and namespace) -> worker id.
    #[serde(default)]
    pub uids: Vec<(String, String, u32)>,
    /// Owner of the port.
    #[serde(default)]
    pub owns_port: bool,
}

/// Why a document cannot be adopted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FormatError {
    #[error("the handover state is not readable: {0}")]
    Unreadable(String),
    #[error(
        "the handover state has format version {found}; this binary adopts versions {OLDEST_ADOPTED} to {FORMAT_VERSION}"
    )]
    Version { found: u32 },
}

impl Handover {
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of plain data always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a document, checking its version first (so a newer layout is
    /// refused by version, not by a confusing field error).
    pub fn parse(bytes: &[u8]) -> Result<Handover, FormatError> {
        #[derive(Deserialize)]
        struct V {
            version: u32,
        }
        let v: V = serde_json::from_slice(bytes).map_err(|e| FormatError::Unreadable(e.to_string()))?;
        if !(OLDEST_ADOPTED..=FORMAT_VERSION).contains(&v.version) {
            return Err(FormatError::Version { found: v.version });
        }
        serde_json::from_slice(bytes).map_err(|e| FormatError::Unreadable(e.to_string()))
    }

    /// Every descriptor the document names (they must survive the exec).
    pub fn fds(&self) -> Vec<i32> {
        let mut v = vec![self.control_fd, self.rpc_fd, self.pub_fd];
        v.extend(self.bridge.as_ref().and_then(|b| b.listen_fd));
        v.extend(self.requester_fd);
        v.extend(self.control_conns.iter().copied());
        v.extend(self.fallback_exe_fd);
        for p in &self.procs {
            if let Some(c) = &p.child {
                v.extend(c.out_fd);
                v.extend(c.err_fd);
                v.extend(c.stdin_fd);
                v.extend(c.ipc.as_ref().map(|i| i.fd));
            }
        }
        v.extend(self.listeners.iter().map(|l| l.fd));
        v.extend(self.sticky_ports.iter().map(|p| p.fd));
        v.extend(self.activation.iter().map(|a| a.fd));
        v.retain(|fd| *fd >= 0);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Handover {
        let info = ProcInfo { pm_id: 3, pid: 4242, restart_time: 7, pm_uptime: 1234, ..Default::default() };
        Handover {
            version: FORMAT_VERSION,
            from_version: "1.0.0".into(),
            fallback_exe_fd: Some(9),
            start_path: "/usr/bin/pm2".into(),
            control_fd: 5,
            rpc_fd: 6,
            pub_fd: 7,
            requester_fd: Some(11),
            next_id: 4,
            next_wid: 12,
            msg_seq: 99,
            procs: vec![ProcHandover {
                info,
                child: Some(ChildHandover {
                    pid: 4242,
                    out_fd: Some(20),
                    err_fd: Some(21),
                    stdin_fd: None,
                    ipc: Some(IpcHandover {
                        wid: 12,
                        fd: 22,
                        mode: "advanced".into(),
                        v8_version: 15,
                        partial_in: vec![0, 0, 0, 9, 0xff],
                        unsent_out: vec![1, 2, 3],
                        draining: false,
                    }),
                }),
                restart_in_ms: None,
            }],
            listeners: vec![ListenerHandover {
                app: "api".into(),
                key: "::0:8000:6:-1:0".into(),
                fd: 30,
                kind: "tcp".into(),
                path: None,
                members: vec![12],
            }],
            sticky_ports: vec![PortHandover { port: 9000, fd: 31 }],
            sticky_apps: vec![],
            failure: None,
            started_ms: 1,
            title: "PM2 v1.0.0: God Daemon (/root/.pm2)".into(),
            control_conns: vec![12],
            activation: vec![ActivationHandover {
                app: "asgi".into(),
                addr: "127.0.0.1:8000".into(),
                fd: 32,
                holders: vec![3],
            }],
            bridge: Some(crate::multihost::Resume {
                node_id: "web-1".into(),
                incarnation: "00ff".into(),
                next_seq: 41,
                last_id: Some("1700000000000-3".into()),
                peers: Some(serde_json::json!({"me": "web-1"})),
                listen_fd: Some(33),
            }),
        }
    }

    #[test]
    fn round_trip_keeps_everything() {
        let h = sample();
        let back = Handover::parse(&h.to_bytes()).expect("parses");
        assert_eq!(back.to_bytes(), h.to_bytes());
        assert_eq!(back.procs[0].info.restart_time, 7);
        assert_eq!(
            back.bridge.as_ref().map(|b| (b.next_seq, b.last_id.as_deref())),
            Some((41, Some("1700000000000-3")))
        );
        assert_eq!(
            back.procs[0].child.as_ref().and_then(|c| c.ipc.as_ref()).map(|i| i.partial_in.len()),
            Some(5)
        );
    }

    #[test]
    fn a_document_of_the_oldest_version_without_later_fields_is_adopted() {
        // What a version-1 writer that knew no sticky state, no failure and
        // no start time wrote: the fields added since default.
        let old = br#"{"version":1,"from_version":"0.9.0","fallback_exe_fd":null,"control_fd":3,
            "rpc_fd":4,"pub_fd":5,"requester_fd":null,"next_id":0,"next_wid":0,"msg_seq":0}"#;
        let h = Handover::parse(old).expect("adopted");
        assert!(h.procs.is_empty() && h.sticky_apps.is_empty() && h.failure.is_none());
        assert!(h.activation.is_empty() && h.bridge.is_none());
        assert_eq!(h.fds(), vec![3, 4, 5]);
    }

    #[test]
    fn a_newer_or_older_version_is_refused_clearly() {
        for found in [0, FORMAT_VERSION + 1, 1000] {
            let doc = format!(r#"{{"version":{found},"something_new":[1,2,3]}}"#);
            let e = Handover::parse(doc.as_bytes()).expect_err("refused");
            assert_eq!(e, FormatError::Version { found });
            assert!(e.to_string().contains(&format!("adopts versions {OLDEST_ADOPTED} to {FORMAT_VERSION}")));
        }
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        for doc in [&b""[..], b"{", b"[]", b"{\"version\":\"1\"}", b"{\"version\":1}"] {
            assert!(matches!(Handover::parse(doc), Err(FormatError::Unreadable(_))), "{doc:?}");
        }
    }

    #[test]
    fn every_descriptor_is_listed_once_for_the_exec() {
        let mut fds = sample().fds();
        fds.sort();
        assert_eq!(fds, vec![5, 6, 7, 9, 11, 12, 20, 21, 22, 30, 31, 32, 33]);
    }

    #[test]
    fn probe_lines_parse() {
        assert_eq!(parse_probe(&probe_line()), Some((OLDEST_ADOPTED, FORMAT_VERSION)));
        assert_eq!(parse_probe("hello\ncorral-handover 1 3\n"), Some((1, 3)));
        assert_eq!(parse_probe("pm2 5.3.0"), None);
    }
}
