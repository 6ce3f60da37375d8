//! The multi-host settings, read from the daemon's environment:
//!
//! - `PM2_CLUSTER_REDIS`: `redis://[user[:pass]@]host[:port][/db]`, or `rediss://` for TLS.
//!   Unset or empty: the daemon is a single host, nothing connects anywhere.
//! - `PM2_CLUSTER_REDIS_CA`: a PEM file of the CA certificates that sign Redis's certificate
//!   (a private CA); without it the system's trusted roots. `PM2_CLUSTER_REDIS_CERT` and
//!   `PM2_CLUSTER_REDIS_KEY`: a client certificate and its key, for a Redis that asks for
//!   one (`tls-auth-clients yes`, Redis's default). All three only with `rediss://`.
//! - `PM2_CLUSTER_SECRET`: the shared secret every entry is signed with (HMAC-SHA256).
//!   Required with a Redis URL: an unsigned bus lets anyone who can reach Redis inject
//!   Socket.IO packets into every worker.
//! - `PM2_CLUSTER_LISTEN`: `host:port` of the node-to-node listener (request forwarding;
//!   without it this node forwards requests for other nodes' sessions but takes none).
//! - `PM2_CLUSTER_ADVERTISE`: `host:port` the other nodes connect to for that listener
//!   (default: `PM2_CLUSTER_LISTEN`; required when that is a wildcard such as `0.0.0.0`).
//! - `PM2_NODE_ID`: this node's name in the cluster. Default: the hostname plus a random
//!   suffix, so two daemons on one machine never collide.

use std::fmt;

/// Default Redis port.
pub const DEFAULT_REDIS_PORT: u16 = 6379;
/// Longest accepted node id (it is part of Redis keys and every stream entry).
pub const MAX_NODE_ID_LEN: usize = 64;
/// A shorter secret is refused: it would be guessable.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("PM2_CLUSTER_REDIS: {0}")]
    Redis(String),
    #[error("{0} is set but PM2_CLUSTER_REDIS is redis:// (no TLS); use rediss://")]
    TlsFileWithoutTls(&'static str),
    #[error(
        "PM2_CLUSTER_REDIS_CERT and PM2_CLUSTER_REDIS_KEY go together (a client certificate and its key)"
    )]
    CertWithoutKey,
    #[error("PM2_CLUSTER_SECRET is required with PM2_CLUSTER_REDIS (every node must share it)")]
    MissingSecret,
    #[error("PM2_CLUSTER_SECRET is too short: at least {MIN_SECRET_LEN} characters")]
    ShortSecret,
    #[error("PM2_CLUSTER_LISTEN: {0}")]
    Listen(String),
    #[error("PM2_CLUSTER_ADVERTISE: {0}")]
    Advertise(String),
    #[error("PM2_NODE_ID: {0}")]
    NodeId(String),
}

/// Where Redis is and how to log in.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    /// `rediss://`: the connection is TLS.
    pub tls: bool,
}

impl fmt::Debug for RedisUrl {
    // The password never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for RedisUrl {
    /// The URL without its password, for logs and `pm2 report`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", if self.tls { "rediss" } else { "redis" })?;
        match (&self.user, &self.password) {
            (Some(u), Some(_)) => write!(f, "{u}:***@")?,
            (Some(u), None) => write!(f, "{u}@")?,
            (None, Some(_)) => write!(f, ":***@")?,
            (None, None) => {}
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}/{}", self.host, self.port, self.db)
        } else {
            write!(f, "{}:{}/{}", self.host, self.port, self.db)
        }
    }
}

/// Everything a node needs to join the cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub redis: RedisUrl,
    pub secret: Vec<u8>,
    pub listen: Option<(String, u16)>,
    /// Where the other nodes reach the listener (`host:port`), when there is one.
    pub advertise: Option<String>,
    pub node_id: String,
    /// Certificates for a `rediss://` URL (all empty otherwise).
    pub tls_files: TlsFiles,
}

/// The PEM files of `PM2_CLUSTER_REDIS_CA`, `_CERT` and `_KEY` (read when the bridge starts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis", &self.redis)
            .field("secret", &"***")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("node_id", &self.node_id)
            .field("tls_files", &self.tls_files)
            .finish()
    }
}

/// Reads the settings through `get` (the environment in the daemon, a map in tests).
/// `Ok(None)`: no Redis URL, the node stays alone. `default_node_id` is called only when
/// `PM2_NODE_ID` is unset.
pub fn from_env(
    get: impl Fn(&str) -> Option<String>,
    default_node_id: impl FnOnce() -> String,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let nonempty = |k: &str| get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let Some(url) = nonempty("PM2_CLUSTER_REDIS") else { return Ok(None) };
    let redis = parse_redis_url(&url)?;
    // The secret is taken as is (no trim): spaces may be part of it.
    let secret = get("PM2_CLUSTER_SECRET").filter(|s| !s.is_empty()).ok_or(ConfigError::MissingSecret)?;
    if secret.len() < MIN_SECRET_LEN {
        return Err(ConfigError::ShortSecret);
    }
    let listen = nonempty("PM2_CLUSTER_LISTEN")
        .map(|l| parse_host_port(&l).map_err(ConfigError::Listen))
        .transpose()?;
    let advertise = match (nonempty("PM2_CLUSTER_ADVERTISE"), &listen) {
        (Some(a), _) => Some(parse_host_port(&a).map_err(ConfigError::Advertise)?),
        (None, Some((h, p))) if is_wildcard(h) => {
            return Err(ConfigError::Advertise(format!(
                "required when PM2_CLUSTER_LISTEN is the wildcard {h}:{p} (the address the other nodes connect to)"
            )))
        }
        (None, l) => l.clone(),
    }
    .filter(|_| listen.is_some())
    .map(|(h, p)| if h.contains(':') { format!("[{h}]:{p}") } else { format!("{h}:{p}") });
    let node_id = match nonempty("PM2_NODE_ID") {
        Some(id) => {
            check_node_id(&id)?;
            id
        }
        None => default_node_id(),
    };
    let path = |k: &str| nonempty(k).map(std::path::PathBuf::from);
    let tls_files = TlsFiles {
        ca: path("PM2_CLUSTER_REDIS_CA"),
        cert: path("PM2_CLUSTER_REDIS_CERT"),
        key: path("PM2_CLUSTER_REDIS_KEY"),
    };
    if !redis.tls {
        // A CA given with a plain URL means someone believes the link is encrypted: say it is not.
        for (k, v) in [
            ("PM2_CLUSTER_REDIS_CA", &tls_files.ca),
            ("PM2_CLUSTER_REDIS_CERT", &tls_files.cert),
            ("PM2_CLUSTER_REDIS_KEY", &tls_files.key),
        ] {
            if v.is_some() {
                return Err(ConfigError::TlsFileWithoutTls(k));
            }
        }
    }
    if tls_files.cert.is_some() != tls_files.key.is_some() {
        return Err(ConfigError::CertWithoutKey);
    }
    Ok(Some(ClusterConfig { redis, secret: secret.into_bytes(), listen, advertise, node_id, tls_files }))
}

fn is_wildcard(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

/// `hostname-xxxxxx`: the hostname reduced to node-id characters plus 24 random bits.
pub fn default_node_id(hostname: &str, random: u32) -> String {
    let mut host: String = hostname
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' { c } else { '_' })
        .take(MAX_NODE_ID_LEN - 7)
        .collect();
    if host.is_empty() {
        host.push_str("node");
    }
    format!("{host}-{:06x}", random & 0x00ff_ffff)
}

fn check_node_id(id: &str) -> Result<(), ConfigError> {
    if id.len() > MAX_NODE_ID_LEN {
        return Err(ConfigError::NodeId(format!("longer than {MAX_NODE_ID_LEN} characters")));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))) {
        return Err(ConfigError::NodeId(format!("{c:?} is not allowed (letters, digits, '.', '-', '_')")));
    }
    Ok(())
}

/// Parses `redis[s]://[user[:pass]@]host[:port][/db]`; user and password may be percent-encoded.
pub fn parse_redis_url(url: &str) -> Result<RedisUrl, ConfigError> {
    let bad = |m: &str| ConfigError::Redis(m.to_string());
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("expected redis://host:port/db"))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "redis" => false,
        "rediss" => true,
        other => {
            return Err(ConfigError::Redis(format!(
                "unsupported scheme {other:?} (expected redis:// or rediss://)"
            )))
        }
    };
    if rest.contains(['?', '#']) {
        return Err(bad("query strings and fragments are not supported"));
    }
    // The password may contain '@' or '/' only percent-encoded; the last '@' ends the userinfo.
    let (userinfo, hostpart) = match rest.rfind('@') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let (hostport, db) = match hostpart.split_once('/') {
        Some((hp, "")) => (hp, 0),
        Some((hp, db)) => {
            (hp, db.parse::<u32>().map_err(|_| bad(&format!("database {db:?} is not a number")))?)
        }
        None => (hostpart, 0),
    };
    let (host, port) = if hostport.is_empty() {
        ("127.0.0.1".to_string(), DEFAULT_REDIS_PORT)
    } else {
        parse_host_port_default(hostport, DEFAULT_REDIS_PORT).map_err(ConfigError::Redis)?
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(ui) => {
            let (u, p) = match ui.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (ui, None),
            };
            let u = percent_decode(u).ok_or_else(|| bad("bad percent-encoding in the user name"))?;
            let p = match p {
                Some(p) => {
                    Some(percent_decode(p).ok_or_else(|| bad("bad percent-encoding in the password"))?)
                }
                None => None,
            };
            // `redis://:pass@host` is the classic password-only form (AUTH pass).
            (Some(u).filter(|u| !u.is_empty()), p.filter(|p| !p.is_empty()))
        }
    };
    Ok(RedisUrl { host, port, user, password, db, tls })
}

/// `host:port` with a mandatory port; `[v6]:port` for IPv6.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    parse_host_port_inner(s, None)
}

fn parse_host_port_default(s: &str, default: u16) -> Result<(String, u16), String> {
    parse_host_port_inner(s, Some(default))
}

fn parse_host_port_inner(s: &str, default: Option<u16>) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(|| format!("{s:?}: unclosed '['"))?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(format!("{s:?}: unexpected {after:?} after ']'")),
        }
    } else if s.matches(':').count() > 1 {
        return Err(format!("{s:?}: write an IPv6 address as [addr]:port"));
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{s:?}: empty host"));
    }
    if host.chars().any(|c| c.is_whitespace() || c == '/' || c == '@') {
        return Err(format!("{s:?}: bad host {host:?}"));
    }
    let port = match (port, default) {
        (Some(p), _) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("{s:?}: bad port {p:?}")),
        },
        (None, Some(d)) => d,
        (None, None) => return Err(format!("{s:?}: expected host:port")),
    };
    Ok((host.to_string(), port))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<ClusterConfig>, ConfigError> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        from_env(|k| m.get(k).cloned(), || "host-abcdef".to_string())
    }

    const SECRET: &str = "0123456789abcdef";

    #[test]
    fn no_url_means_single_host() {
        assert_eq!(env(&[]), Ok(None));
        assert_eq!(env(&[("PM2_CLUSTER_REDIS", "  "), ("PM2_CLUSTER_SECRET", "x")]), Ok(None));
    }

    #[test]
    fn full_config() {
        let c = env(&[
            ("PM2_CLUSTER_REDIS", "redis://app:p%40ss%2Fw@10.0.0.5:6380/3"),
            ("PM2_CLUSTER_SECRET", SECRET),
            ("PM2_CLUSTER_LISTEN", "0.0.0.0:7000"),
            ("PM2_CLUSTER_ADVERTISE", "10.0.0.7:7000"),
            ("PM2_NODE_ID", "web-1.eu_west"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            c.redis,
            RedisUrl {
                host: "10.0.0.5".into(),
                port: 6380,
                user: Some("app".into()),
                password: Some("p@ss/w".into()),
                db: 3,
                tls: false,
            }
        );
        assert_eq!(c.secret, SECRET.as_bytes());
        assert_eq!(c.listen, Some(("0.0.0.0".into(), 7000)));
        assert_eq!(c.advertise.as_deref(), Some("10.0.0.7:7000"));
        assert_eq!(c.node_id, "web-1.eu_west");
        // Neither Debug nor Display shows the password or the secret.
        let shown = format!("{c:?} {}", c.redis);
        assert!(!shown.contains("p@ss") && !shown.contains(SECRET), "{shown}");
        assert_eq!(c.redis.to_string(), "redis://app:***@10.0.0.5:6380/3");
    }

    #[test]
    fn url_forms() {
        let u = parse_redis_url("redis://localhost").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db, u.user, u.password), ("localhost", 6379, 0, None, None));
        let u = parse_redis_url("redis://:secret@h:1/").unwrap();
        assert_eq!((u.user, u.password, u.db), (None, Some("secret".into()), 0));
        let u = parse_redis_url("REDIS://[::1]:7/2").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db), ("::1", 7, 2));
        assert_eq!(u.to_string(), "redis://[::1]:7/2");
        let u = parse_redis_url("redis://a@b@h").unwrap();
        assert_eq!((u.user.as_deref(), u.host.as_str()), (Some("a@b"), "h"));
        assert_eq!(parse_redis_url("redis://").unwrap().host, "127.0.0.1");
    }

    #[test]
    fn bad_urls_are_clear_errors() {
        for bad in [
            "h:6379",
            "http://h",
            "unix:///tmp/r.sock",
            "redis://h:0",
            "redis://h:99999",
            "redis://h:x",
            "redis://h/db",
            "redis://h/-1",
            "redis://::1:6379",
            "redis://[::1",
            "redis://u:%zz@h",
            "redis://h?timeout=1",
        ] {
            assert!(matches!(parse_redis_url(bad), Err(ConfigError::Redis(_))), "{bad}");
        }
    }

    #[test]
    fn rediss_is_tls_and_takes_certificate_files() {
        let u = parse_redis_url("rediss://:pw@redis.example:6380/1").unwrap();
        assert!(u.tls);
        assert_eq!(u.to_string(), "rediss://:***@redis.example:6380/1");
        assert!(!parse_redis_url("redis://h").unwrap().tls);
        let c = env(&[
            ("PM2_CLUSTER_REDIS", "rediss://h"),
            ("PM2_CLUSTER_SECRET", SECRET),
            ("PM2_CLUSTER_REDIS_CA", "/etc/corral/ca.pem"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.tls_files.ca.as_deref(), Some(std::path::Path::new("/etc/corral/ca.pem")));
        assert_eq!((c.tls_files.cert.as_ref(), c.tls_files.key.as_ref()), (None, None));
        // Certificate files with a plain URL: refused, the link would not be what they think.
        let e = env(&[
            ("PM2_CLUSTER_REDIS", "redis://h"),
            ("PM2_CLUSTER_SECRET", SECRET),
            ("PM2_CLUSTER_REDIS_CA", "/etc/corral/ca.pem"),
        ])
        .unwrap_err();
        assert_eq!(e, ConfigError::TlsFileWithoutTls("PM2_CLUSTER_REDIS_CA"));
        assert!(e.to_string().contains("use rediss://"), "{e}");
        let e = env(&[
            ("PM2_CLUSTER_REDIS", "rediss://h"),
            ("PM2_CLUSTER_SECRET", SECRET),
            ("PM2_CLUSTER_REDIS_CERT", "/c.pem"),
        ])
        .unwrap_err();
        assert_eq!(e, ConfigError::CertWithoutKey);
    }

    #[test]
    fn secret_is_required_and_long_enough() {
        assert_eq!(env(&[("PM2_CLUSTER_REDIS", "redis://h")]), Err(ConfigError::MissingSecret));
        assert_eq!(
            env(&[("PM2_CLUSTER_REDIS", "redis://h"), ("PM2_CLUSTER_SECRET", "short")]),
            Err(ConfigError::ShortSecret)
        );
    }

    #[test]
    fn listen_and_node_id_are_validated() {
        let base = [("PM2_CLUSTER_REDIS", "redis://h"), ("PM2_CLUSTER_SECRET", SECRET)];
        for bad in ["7000", "h:", ":7000", "h:0", "[::1]", "a:b:c"] {
            let mut e = base.to_vec();
            e.push(("PM2_CLUSTER_LISTEN", bad));
            assert!(matches!(env(&e), Err(ConfigError::Listen(_))), "{bad}");
        }
        let mut e = base.to_vec();
        e.push(("PM2_CLUSTER_LISTEN", "[::]:7000"));
        // A wildcard listener needs the address the others connect to.
        assert!(matches!(env(&e), Err(ConfigError::Advertise(_))));
        e.push(("PM2_CLUSTER_ADVERTISE", "[fd00::2]:7000"));
        let c = env(&e).unwrap().unwrap();
        assert_eq!(c.listen, Some(("::".into(), 7000)));
        assert_eq!(c.advertise.as_deref(), Some("[fd00::2]:7000"));
        let mut e = base.to_vec();
        e.push(("PM2_CLUSTER_LISTEN", "10.0.0.3:7000"));
        assert_eq!(env(&e).unwrap().unwrap().advertise.as_deref(), Some("10.0.0.3:7000"));
        // No listener, nothing to advertise.
        let mut e = base.to_vec();
        e.push(("PM2_CLUSTER_ADVERTISE", "10.0.0.3:7000"));
        assert_eq!(env(&e).unwrap().unwrap().advertise, None);
        for bad in ["a b", "x/y", "é", &"n".repeat(65)] {
            let mut e = base.to_vec();
            e.push(("PM2_NODE_ID", bad));
            assert!(matches!(env(&e), Err(ConfigError::NodeId(_))), "{bad}");
        }
        assert_eq!(env(&base).unwrap().unwrap().node_id, "host-abcdef");
    }

    #[test]
    fn default_node_id_is_hostname_and_suffix() {
        assert_eq!(default_node_id("web1.example.com", 0xabcdef), "web1.example.com-abcdef");
        assert_eq!(default_node_id("", 0x1ff_ffff), "node-ffffff");
        assert_eq!(default_node_id("h ö", 1), "h__-000001");
        let long = default_node_id(&"x".repeat(200), 5);
        assert!(long.len() <= MAX_NODE_ID_LEN);
        assert!(check_node_id(&long).is_ok());
    }
}
