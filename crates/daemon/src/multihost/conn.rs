//! A thin async Redis connection over [`super::resp`]: connect (TCP, TLS for `rediss://`,
//! `AUTH`, `SELECT`), then commands one at a time or pipelined. Every wait is bounded; any
//! error drops the connection and the owner reconnects with [`Backoff`].

use super::config::{ClusterConfig, RedisUrl};
use super::resp::{self, Reply, RespError};
use super::tls::{self, TlsError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on connect + login and on a plain command's reply.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Resp(#[from] RespError),
    #[error("Redis refused {cmd}: {msg}")]
    Refused { cmd: String, msg: String },
    #[error("no reply from Redis within {0:?}")]
    Timeout(Duration),
    #[error("Redis closed the connection")]
    Closed,
    #[error("unexpected reply to {0}")]
    Unexpected(String),
    #[error("{0}")]
    Tls(String),
}

/// Where Redis is and how to reach it: the URL and, for `rediss://`, the TLS client
/// (built once; every connection of the node shares it).
#[derive(Clone)]
pub struct Target {
    pub url: RedisUrl,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Target {
    /// Reads the certificate files of a `rediss://` URL; a plain URL needs nothing.
    pub fn new(cfg: &ClusterConfig) -> Result<Target, TlsError> {
        let tls = match cfg.redis.tls {
            true => Some(tokio_rustls::TlsConnector::from(tls::client_config(&cfg.tls_files)?)),
            false => None,
        };
        Ok(Target { url: cfg.redis.clone(), tls })
    }
}

/// The byte stream under a connection: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Conn {
    stream: Box<dyn Io>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
}

impl Conn {
    /// Connects (with the TLS handshake for `rediss://`) and logs in (`AUTH [user] pass`,
    /// `SELECT db`), all bounded by [`COMMAND_TIMEOUT`].
    pub async fn connect(target: &Target, client_name: &str) -> Result<Conn, ConnError> {
        let url = &target.url;
        let fut = async {
            let tcp = TcpStream::connect((url.host.as_str(), url.port)).await?;
            let _ = tcp.set_nodelay(true);
            let stream: Box<dyn Io> = match &target.tls {
                None => Box::new(tcp),
                Some(tls) => {
                    let name = tls::server_name(&url.host).map_err(ConnError::Tls)?;
                    let s = tls.connect(name, tcp).await.map_err(|e| ConnError::Tls(tls::explain(&e)))?;
                    Box::new(s)
                }
            };
            let mut c = Conn { stream, rbuf: Vec::new(), wbuf: Vec::new() };
            if let Some(pass) = &url.password {
                match &url.user {
                    Some(user) => c.ok(&["AUTH", user.as_str(), pass.as_str()]).await?,
                    None => c.ok(&["AUTH", pass.as_str()]).await?,
                }
            }
            if url.db != 0 {
                c.ok(&["SELECT", &url.db.to_string()]).await?;
            }
            // Visible in CLIENT LIST: which node a connection belongs to.
            let _ = c.cmd(&["CLIENT", "SETNAME", client_name]).await?;
            Ok(c)
        };
        tokio::time::timeout(COMMAND_TIMEOUT, fut).await.map_err(|_| ConnError::Timeout(COMMAND_TIMEOUT))?
    }

    /// One command, its reply (a Redis error reply is returned as `Reply::Error`).
    pub async fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply, ConnError> {
        self.cmd_within(args, COMMAND_TIMEOUT).await
    }

    /// Like [`Conn::cmd`] with its own bound (XREAD BLOCK waits longer than a plain command).
    pub async fn cmd_within<A: AsRef<[u8]>>(
        &mut self,
        args: &[A],
        limit: Duration,
    ) -> Result<Reply, ConnError> {
        self.wbuf.clear();
        resp::encode(args, &mut self.wbuf);
        let mut out = self.round_trip(1, limit).await?;
        out.pop().ok_or(ConnError::Closed)
    }

    /// Sends every command in one write and returns their replies in order.
    pub async fn pipeline(&mut self, cmds: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, ConnError> {
        self.wbuf.clear();
        for c in cmds {
            resp::encode(c, &mut self.wbuf);
        }
        self.round_trip(cmds.len(), COMMAND_TIMEOUT).await
    }

    async fn ok(&mut self, args: &[&str]) -> Result<(), ConnError> {
        match self.cmd(args).await? {
            Reply::Status(_) => Ok(()),
            Reply::Error(msg) => Err(ConnError::Refused { cmd: args[0].to_string(), msg }),
            _ => Err(ConnError::Unexpected(args[0].to_string())),
        }
    }

    async fn round_trip(&mut self, n: usize, limit: Duration) -> Result<Vec<Reply>, ConnError> {
        let fut = async {
            self.stream.write_all(&self.wbuf).await?;
            // TLS may keep records buffered until flushed (a no-op for plain TCP).
            self.stream.flush().await?;
            let mut out = Vec::with_capacity(n);
            // Replies taken from `rbuf[..start]`, removed once at the end (a pipeline's
            // replies are many and small).
            let mut start = 0;
            let mut scan = resp::Scanner::default();
            while out.len() < n {
                if let Some(end) = scan.scan(&self.rbuf[start..])? {
                    // Complete: parsed once, and the parser must agree on where it ends.
                    match resp::parse(&self.rbuf[start..start + end])? {
                        Some((r, used)) if used == end => out.push(r),
                        _ => return Err(RespError::Malformed("reply ends elsewhere than it said").into()),
                    }
                    start += end;
                    continue;
                }
                self.rbuf.reserve(READ_CHUNK);
                let got = self.stream.read_buf(&mut self.rbuf).await?;
                if got == 0 {
                    return Err(ConnError::Closed);
                }
            }
            self.rbuf.drain(..start);
            Ok(out)
        };
        tokio::time::timeout(limit, fut).await.map_err(|_| ConnError::Timeout(limit))?
    }
}

/// Reconnect delays: 100 ms doubling to 2 s, reset after a success. Short enough that a
/// Redis restart costs about a second, long enough not to spin on a dead server.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(2);

    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::default();
        let seq: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(seq, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
