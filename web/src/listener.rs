//! The HTTP accept loop, bounded: a client that opens connections and sends nothing (or one
//! byte at a time) must not stop the boot scripts, chunks and console of everyone else.
//!
//! - at most [`Bounds::per_address`] connections per client address and [`Bounds::total`] in
//!   all; a connection over either is closed at once;
//! - request headers within [`Bounds::header_read`] (hyper's timer), else closed;
//! - a connection that moves no byte either way for [`Bounds::idle`] is closed (keep-alive
//!   between requests, a client that stops reading its response);
//! - a handler (body upload included) gets [`Bounds::request`], else 503.
//!
//! Bodies streamed after the response headers (chunks, the event stream) are bounded by the
//! idle rule only, so a slow remote site still gets its chunk.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// The limits of one listener.
#[derive(Debug, Clone)]
pub struct Bounds {
    pub total: usize,
    pub per_address: usize,
    pub header_read: Duration,
    pub idle: Duration,
    pub request: Duration,
    /// How long in-flight requests get to finish at shutdown.
    pub drain: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            // A campaign wave of a few thousand PCs, each with one or two connections.
            total: 8192,
            // A PC's agent uses a handful; a technician's browser six; a site cache a few dozen.
            per_address: 64,
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            request: Duration::from_secs(120),
            drain: Duration::from_secs(10),
        }
    }
}

/// Connections open now, in all and per address.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it gives its place back.
struct Admitted {
    open: Arc<Mutex<Open>>,
    address: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut o = self.open.lock().unwrap_or_else(|p| p.into_inner());
        o.total -= 1;
        if let Some(n) = o.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                o.by_address.remove(&self.address);
            }
        }
    }
}

fn admit(open: &Arc<Mutex<Open>>, address: IpAddr, b: &Bounds) -> Option<Admitted> {
    let mut o = open.lock().unwrap_or_else(|p| p.into_inner());
    let here = o.by_address.get(&address).copied().unwrap_or(0);
    if o.total >= b.total || here >= b.per_address {
        return None;
    }
    o.total += 1;
    *o.by_address.entry(address).or_insert(0) += 1;
    Some(Admitted { open: open.clone(), address })
}

/// What a listener speaks.
#[derive(Clone)]
pub enum Scheme {
    /// TLS first (the console and the API), HSTS on every answer.
    Https(Arc<rustls::ServerConfig>),
    /// Plain HTTP. With `https_port`, only what firmware and agents fetch is served to other
    /// hosts ([`firmware_path`]); the console is redirected there and the rest of the API
    /// refused, so no password, token or cookie crosses the network in clear. The appliance
    /// itself (127.0.0.1, ::1, or its own address) may still use everything.
    Http { https_port: Option<u16> },
}

impl std::fmt::Debug for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scheme::Https(_) => f.write_str("Https"),
            Scheme::Http { https_port } => write!(f, "Http {{ https_port: {https_port:?} }}"),
        }
    }
}

/// A request came over TLS (request extension; the console sets `Secure` cookies).
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// What network-booting firmware and agents fetch, which stays on plain HTTP: iPXE and UEFI
/// firmware speak no TLS we could rely on, and the agent's credentials are bound to the boot
/// (see README). Image names are only read (GET) there.
pub fn firmware_path(method: &hyper::Method, path: &str) -> bool {
    path == "/boot.ipxe"
        || path.starts_with("/netboot/")
        || path.starts_with("/ipxe/")
        || path.starts_with("/chunks/")
        || path.starts_with("/manifests/")
        || path.starts_with("/api/v1/agent/")
        || path == "/api/v1/chunks"
        || path == "/api/v1/openapi.json"
        || path == "/tls/ca.pem"
        || (method == hyper::Method::GET && path.starts_with("/api/v1/images/"))
}

fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped() == Some(std::net::Ipv4Addr::LOCALHOST),
    }
}

/// The answer to a technician's request over plain HTTP from another host, when HTTPS is on.
fn to_https(req: &hyper::Request<hyper::body::Incoming>, https_port: u16) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if req.uri().path().starts_with("/api/") {
        return crate::AppError::Forbidden(format!(
            "the API is served over HTTPS only, on port {https_port}: passwords and tokens never cross the network in clear"
        ))
        .into_response();
    }
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b".:-[]".contains(&b)))
        .unwrap_or("localhost");
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !n.ends_with(':') => n,
        _ => host,
    };
    axum::response::Redirect::permanent(&format!("https://{name}:{https_port}{path}")).into_response()
}

/// Serves `app` on `listener` within `bounds` until `shutdown`, then lets in-flight requests
/// finish for `bounds.drain`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    scheme: Scheme,
    bounds: Bounds,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let open: Arc<Mutex<Open>> = Arc::default();
    let tracker = TaskTracker::new();
    let mut refused_since_log = 0u64;
    let mut last_log = Instant::now();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: wait a little rather than spin; the loop goes on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = admit(&open, peer.ip(), &bounds) else {
            drop(stream);
            refused_since_log += 1;
            if last_log.elapsed() > Duration::from_secs(10) {
                tracing::warn!(%peer, refused = refused_since_log, "connection limit reached: connections closed");
                refused_since_log = 0;
                last_log = Instant::now();
            }
            continue;
        };
        let app = app.clone();
        let bounds = bounds.clone();
        let shutdown = shutdown.clone();
        let scheme = scheme.clone();
        tracker.spawn(async move {
            let _admitted = admitted;
            connection(stream, peer, app, scheme, &bounds, shutdown).await;
        });
    }
    tracker.close();
    if tokio::time::timeout(bounds.drain, tracker.wait()).await.is_err() {
        tracing::warn!(seconds = bounds.drain.as_secs(), "requests still running at shutdown were cut off");
    }
    Ok(())
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    scheme: Scheme,
    b: &Bounds,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    // The appliance itself: loopback, or one of its own addresses (a TCP peer cannot fake
    // those, the handshake's answer would never reach it).
    let from_itself = is_local(peer.ip()) || stream.local_addr().is_ok_and(|l| l.ip() == peer.ip());
    let activity = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let watched = Watched { inner: stream, activity: activity.clone(), started };
    match scheme {
        Scheme::Https(config) => {
            // The handshake is bounded like request headers: a client that opens and waits
            // holds nothing for long.
            let accepted =
                tokio::time::timeout(b.header_read, tokio_rustls::TlsAcceptor::from(config).accept(watched)).await;
            match accepted {
                Ok(Ok(tls)) => {
                    drive(TokioIo::new(tls), peer, app, (true, true), None, b, activity, started, shutdown).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
        Scheme::Http { https_port } => {
            drive(TokioIo::new(watched), peer, app, (false, from_itself), https_port, b, activity, started, shutdown)
                .await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn drive<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    (secure, trusted): (bool, bool),
    https_port: Option<u16>,
    b: &Bounds,
    activity: Arc<AtomicU64>,
    started: Instant,
    shutdown: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let request_timeout = b.request;
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        if secure {
            req.extensions_mut().insert(OverTls);
        }
        let refused = match https_port {
            Some(port) if !trusted && !firmware_path(req.method(), req.uri().path()) => Some(to_https(&req, port)),
            _ => None,
        };
        let app = app.clone();
        async move {
            if let Some(r) = refused {
                return Ok::<_, Infallible>(r);
            }
            let mut response =
                match tokio::time::timeout(request_timeout, app.oneshot(req.map(axum::body::Body::new))).await {
                    Ok(r) => r.unwrap_or_else(|e: Infallible| match e {}),
                    Err(_) => {
                        tracing::warn!(%peer, seconds = request_timeout.as_secs(), "request took too long: 503");
                        axum::response::IntoResponse::into_response(crate::AppError::Unavailable(format!(
                            "the request took more than {} s; try again",
                            request_timeout.as_secs()
                        )))
                    }
                };
            if secure {
                response.headers_mut().insert(
                    hyper::header::STRICT_TRANSPORT_SECURITY,
                    hyper::header::HeaderValue::from_static("max-age=31536000"),
                );
            }
            Ok::<_, Infallible>(response)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(b.header_read)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let idle = b.idle;
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            _ = shutdown.cancelled(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = tokio::time::sleep(idle / 4) => {
                let last = Duration::from_millis(activity.load(Ordering::Relaxed));
                if started.elapsed().saturating_sub(last) > idle {
                    tracing::debug!(%peer, seconds = idle.as_secs(), "idle connection closed");
                    return;
                }
            }
        }
    }
}

/// A stream that records when a byte last moved (milliseconds since `started`).
struct Watched {
    inner: TcpStream,
    activity: Arc<AtomicU64>,
    started: Instant,
}

impl Watched {
    fn touch(&self) {
        self.activity.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Raises the soft open-file limit to the hard one: systemd's default soft limit (1,024) is
/// far below what a campaign needs, and each connection is one file.
pub fn raise_file_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_per_address_and_in_all_come_back() {
        let b = Bounds { total: 3, per_address: 2, ..Bounds::default() };
        let open: Arc<Mutex<Open>> = Arc::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let c: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = admit(&open, a, &b).unwrap();
        let _a2 = admit(&open, a, &b).unwrap();
        assert!(admit(&open, a, &b).is_none(), "third from one address");
        let _c1 = admit(&open, c, &b).unwrap();
        assert!(admit(&open, c, &b).is_none(), "over the total");
        drop(a1);
        assert!(admit(&open, c, &b).is_some(), "a closed connection gives its place back");
        assert_eq!(open.lock().unwrap().by_address.len(), 2);
    }
}
