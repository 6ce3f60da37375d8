//! TLS to Redis (`rediss://`): rustls with the ring provider, so the daemon links no OpenSSL.
//!
//! The client configuration is built once when the bridge starts, from the settings'
//! [`TlsFiles`]: the server's certificate is checked against `PM2_CLUSTER_REDIS_CA` when it
//! is set (a private CA, the usual case for a self-hosted Redis), else against the system's
//! trusted roots (a managed Redis with a public certificate); `PM2_CLUSTER_REDIS_CERT` and
//! `_KEY` add a client certificate for a Redis that asks for one. A file that cannot be read
//! or holds no certificate is a start-up error (the node runs alone and says why), never a
//! silent fallback to weaker checking. The host name (or IP address) of the URL must be in
//! the server's certificate, as for any TLS client.

use super::config::TlsFiles;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{var} {path}: {msg}")]
    File { var: &'static str, path: String, msg: String },
    #[error("no trusted root certificate in the system store ({0}); install the CA certificates (Debian: ca-certificates) or set PM2_CLUSTER_REDIS_CA")]
    NoRoots(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the client configuration for `rediss://`.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match &files.ca {
        Some(path) => private_roots(path)?,
        None => system_roots()?,
    };
    // The ring provider explicitly, not the process-wide default: nothing else in the
    // daemon installs one, and this must not depend on which features happen to be on.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain = certificates("PM2_CLUSTER_REDIS_CERT", cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
                var: "PM2_CLUSTER_REDIS_KEY",
                path: key.display().to_string(),
                msg: format!("no usable private key ({e})"),
            })?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The name the server's certificate must carry: the URL's host (a DNS name or an IP).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} cannot be checked against a certificate: {e}"))
}

fn certificates(var: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |msg: String| TlsError::File { var, path: path.display().to_string(), msg };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file (expected PEM, -----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certs)
}

fn private_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("PM2_CLUSTER_REDIS_CA", path)? {
        roots.add(cert).map_err(|e| TlsError::File {
            var: "PM2_CLUSTER_REDIS_CA",
            path: path.display().to_string(),
            msg: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    // Some system bundles carry certificates webpki cannot parse; the rest still count.
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found.errors.first().map_or_else(|| "it is empty".to_owned(), |e| e.to_string());
        return Err(TlsError::NoRoots(why));
    }
    Ok(roots)
}

/// What a failed handshake means for the operator, for the log line.
pub fn explain(e: &std::io::Error) -> String {
    let msg = e.to_string();
    let hint = if msg.contains("UnknownIssuer") || msg.contains("invalid peer certificate") {
        " (is PM2_CLUSTER_REDIS_CA the CA that signed Redis's certificate, and is the URL's host in it?)"
    } else if msg.contains("CertificateRequired") || msg.contains("certificate required") {
        " (Redis asks for a client certificate: set PM2_CLUSTER_REDIS_CERT and PM2_CLUSTER_REDIS_KEY)"
    } else {
        ""
    };
    format!("TLS handshake failed: {msg}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles { ca: Some(dir.path().join("nope.pem")), cert: None, key: None };
        let e = client_config(&files).unwrap_err().to_string();
        assert!(e.starts_with("PM2_CLUSTER_REDIS_CA ") && e.contains("nope.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let files = TlsFiles { ca: Some(empty), cert: None, key: None };
        let e = client_config(&files).unwrap_err().to_string();
        assert!(e.contains("no certificate in the file"), "{e}");
    }

    #[test]
    fn server_names_are_hosts_or_ips() {
        assert!(matches!(server_name("127.0.0.1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name("redis.example.com"), Ok(ServerName::DnsName(_))));
        assert!(server_name("bad name").is_err());
    }
}
