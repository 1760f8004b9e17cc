//! The HTTP client store: reads chunks, manifests and names from `parc serve` (or any HTTP
//! cache in front of it). Transient failures (connection refused or reset, timeouts, 5xx)
//! are retried with backoff for a while, so a deploy survives the server restarting; a 404
//! is final.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::{ChunkSource, StoreError};
use crate::digest::Digest;
use crate::format::manifest::MAX_MANIFEST_BYTES;

/// Largest chunk body accepted: a 64 MiB grid cell that did not compress, plus zstd framing.
const MAX_CHUNK_BYTES: u64 = (64 << 20) + (1 << 20);

#[derive(Debug)]
pub struct HttpStore {
    base: String,
    agent: ureq::Agent,
    /// How long to keep retrying one request before giving up.
    retry_for: Duration,
    /// Chunk body bytes received, every attempt counted (a retried or repeated fetch shows).
    chunk_bytes: AtomicU64,
    /// Sent with image and manifest requests (`Authorization: Bearer`), never with chunk
    /// requests: chunks are named by their digest, which only a manifest tells, and a request
    /// without credentials is what a site's HTTP cache may answer from its copy.
    token: Option<String>,
}

enum Attempt<T> {
    Done(T),
    NotFound,
    Retry(String),
}

/// An HTTP client for talking to the appliance: short connect timeout (an unreachable
/// server is retried by the caller), statuses returned rather than turned into errors. HTTPS
/// is verified against [`trust`]`(None)`.
pub fn client(request_timeout: Duration) -> ureq::Agent {
    client_trusting(request_timeout, &trust(None))
}

/// Where HTTPS trust comes from: `ca_file` (the appliance's CA pinned by `parc login`), else
/// `PARC_CA_FILE`, else the system's bundle (the hospital's PKI).
pub fn trust(ca_file: Option<&std::path::Path>) -> std::path::PathBuf {
    ca_file
        .map(std::path::Path::to_path_buf)
        .or_else(|| std::env::var_os("PARC_CA_FILE").map(Into::into))
        .unwrap_or_else(|| SYSTEM_BUNDLE.into())
}

/// Debian's bundle of the system's trusted CAs (package ca-certificates).
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// [`client`] trusting the certificates of the PEM file `roots` (none if it is unreadable: then
/// every HTTPS request fails verification, naming the server, never silently trusts).
pub fn client_trusting(request_timeout: Duration, roots: &std::path::Path) -> ureq::Agent {
    let pem = std::fs::read(roots).unwrap_or_default();
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    agent_with(request_timeout, tls_config().root_certs(ureq::tls::RootCerts::new_with_certs(&certs)))
}

/// A client that accepts any certificate: only to fetch a CA certificate whose fingerprint the
/// caller then checks against one a technician typed.
pub fn client_unverified(request_timeout: Duration) -> ureq::Agent {
    agent_with(request_timeout, tls_config().disable_verification(true))
}

/// rustls with ring, the one TLS stack of the workspace.
fn tls_config() -> ureq::tls::TlsConfigBuilder {
    ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
}

fn agent_with(request_timeout: Duration, tls: ureq::tls::TlsConfigBuilder) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(Some(request_timeout))
        .http_status_as_error(false)
        .tls_config(tls.build())
        .build()
        .into()
}

impl HttpStore {
    /// `base` is the server URL, e.g. `http://appliance:8080`.
    pub fn new(base: &str, retry_for: Duration) -> HttpStore {
        HttpStore {
            base: base.trim_end_matches('/').to_string(),
            agent: client(Duration::from_secs(60)),
            retry_for,
            chunk_bytes: AtomicU64::new(0),
            token: None,
        }
    }

    /// The same store, presenting `token` for image names and manifests.
    pub fn with_token(self, token: Option<String>) -> HttpStore {
        HttpStore { token, ..self }
    }

    /// Chunk bytes received so far over every attempt, including those of failed or repeated
    /// requests: what "nothing fetched twice" is checked against.
    pub fn chunk_bytes_received(&self) -> u64 {
        self.chunk_bytes.load(Ordering::Relaxed)
    }

    fn get(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_counted(path, limit, None)
    }

    fn get_counted(&self, path: &str, limit: u64, count: Option<&AtomicU64>) -> Result<Option<Vec<u8>>, StoreError> {
        let url = format!("{}{}", self.base, path);
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let mut request = self.agent.get(&url);
            if let Some(t) = self.token.as_deref().filter(|_| !path.starts_with("/chunks/")) {
                request = request.header("Authorization", &format!("Bearer {t}"));
            }
            let attempt = match request.call() {
                Ok(mut resp) => match resp.status().as_u16() {
                    200 => match read_body(resp.body_mut().with_config().limit(limit).reader(), count) {
                        Ok(body) => Attempt::Done(body),
                        Err(e) => Attempt::Retry(format!("reading the body: {e}")),
                    },
                    404 => Attempt::NotFound,
                    s if s >= 500 || s == 429 => Attempt::Retry(format!("server answered {s}")),
                    401 | 403 => {
                        return Err(StoreError::Http {
                            url,
                            reason: format!(
                                "server answered {} (a credential that may read this image is needed)",
                                resp.status().as_u16()
                            ),
                        })
                    }
                    s => return Err(StoreError::Http { url, reason: format!("server answered {s}") }),
                },
                Err(e) => Attempt::Retry(e.to_string()),
            };
            match attempt {
                Attempt::Done(b) => return Ok(Some(b)),
                Attempt::NotFound => return Ok(None),
                Attempt::Retry(reason) => {
                    if started.elapsed() >= self.retry_for {
                        return Err(StoreError::Http {
                            url,
                            reason: format!("{reason} (gave up after {} s of retries)", self.retry_for.as_secs()),
                        });
                    }
                    tracing::warn!(url = %url, reason = %reason, "retrying");
                    sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Reads a body to the end, adding every byte received to `count`, even when the read fails.
fn read_body(mut r: impl Read, count: Option<&AtomicU64>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(body),
            Ok(n) => {
                if let Some(c) = count {
                    c.fetch_add(n as u64, Ordering::Relaxed);
                }
                body.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

impl ChunkSource for HttpStore {
    fn read_chunk(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        self.get_counted(&format!("/chunks/{digest}"), MAX_CHUNK_BYTES, Some(&self.chunk_bytes))?
            .ok_or_else(|| StoreError::ChunkMissing { store: self.location(), digest: *digest })
    }

    fn read_manifest(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        self.get(&format!("/manifests/{digest}"), MAX_MANIFEST_BYTES)?
            .ok_or_else(|| StoreError::ManifestMissing { store: self.location(), digest: *digest })
    }

    fn resolve(&self, reference: &str) -> Result<Digest, StoreError> {
        let unknown = || StoreError::UnknownImage { store: self.location(), reference: reference.to_string() };
        // References are names, name@N or hex: nothing that needs escaping in a path, and
        // anything else is refused here rather than sent.
        if reference.is_empty() || !reference.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b)) {
            return Err(unknown());
        }
        let body = self.get(&format!("/api/v1/images/{reference}"), 64 << 10)?.ok_or_else(unknown)?;
        #[derive(serde::Deserialize)]
        struct Resolved {
            digest: Digest,
        }
        let r: Resolved = serde_json::from_slice(&body).map_err(|e| StoreError::Http {
            url: format!("{}/api/v1/images/{reference}", self.base),
            reason: format!("unexpected answer: {e}"),
        })?;
        Ok(r.digest)
    }

    fn location(&self) -> String {
        self.base.clone()
    }
}
