//! Chunk and manifest serving: content-addressed, so immutable and cacheable forever.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use parc_imager::digest::Digest;
use parc_imager::store::ChunkSource;
use serde::Serialize;

use crate::access::ImageReader;
use crate::auth::Caller;
use crate::range::{self, RangeRequest};
use crate::{blocking, AppError, AppState};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Immutable too, but for the credential's holder only: never in a shared cache.
const PRIVATE: &str = "private, max-age=31536000, immutable";

fn parse_digest(s: &str) -> Result<Digest, AppError> {
    s.parse().map_err(|e: parc_imager::digest::ParseDigestError| AppError::BadRequest(e.to_string()))
}

pub async fn chunk_get(
    State(st): State<AppState>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let d = parse_digest(&digest)?;
    let store = st.store.clone();
    let body = blocking(move || Ok(store.read_chunk(&d)?)).await?;
    Ok(immutable_body(&d, body, "application/zstd", IMMUTABLE, &headers))
}

/// A manifest lists every chunk of an image: it is for a technician's token or the agent of
/// a task deploying it, and no shared cache may keep it (`private`).
pub async fn manifest_get(
    State(st): State<AppState>,
    reader: ImageReader,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let d = parse_digest(&digest)?;
    reader.require_manifest(&d.to_string())?;
    let store = st.store.clone();
    let body = blocking(move || Ok(store.read_manifest(&d)?)).await?;
    Ok(immutable_body(&d, body, "application/json", PRIVATE, &headers))
}

/// A content-addressed body: strong ETag (the digest), conditional GET, single-range requests.
fn immutable_body(
    d: &Digest,
    body: Vec<u8>,
    content_type: &'static str,
    cache_control: &'static str,
    headers: &HeaderMap,
) -> Response {
    let etag = format!("\"{d}\"");
    let mut resp_headers = HeaderMap::new();
    resp_headers.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex is a valid header"));
    resp_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    resp_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    resp_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let if_none_match = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
        return (StatusCode::NOT_MODIFIED, resp_headers).into_response();
    }
    let len = body.len() as u64;
    match range::parse(headers.get(header::RANGE).and_then(|v| v.to_str().ok()), len) {
        RangeRequest::Full => (StatusCode::OK, resp_headers, body).into_response(),
        RangeRequest::Partial(r) => {
            let cr = format!("bytes {}-{}/{len}", r.start, r.end - 1);
            resp_headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(&cr).expect("ascii"));
            let part = body[r.start as usize..r.end as usize].to_vec();
            (StatusCode::PARTIAL_CONTENT, resp_headers, part).into_response()
        }
        RangeRequest::Unsatisfiable => {
            let cr = format!("bytes */{len}");
            resp_headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(&cr).expect("ascii"));
            (StatusCode::RANGE_NOT_SATISFIABLE, resp_headers).into_response()
        }
    }
}

/// At most this many chunks per streaming request (~1 GiB of 1 MiB chunks before compression).
pub const STREAM_MAX: usize = 1024;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRequest {
    digests: Vec<String>,
}

/// Many chunks in one response, for agents that prefer fewer requests: for each requested
/// digest in order, a frame of the 32-byte digest, the stored (zstd) length as u32
/// big-endian, and the stored bytes (`parc_imager::store::http::read_frames` decodes it).
/// Every digest is checked before the first byte is sent, so a missing chunk is a 404 naming
/// it, not a truncated stream.
pub async fn chunks_stream(
    State(st): State<AppState>,
    _reader: ImageReader,
    crate::api::Json(req): crate::api::Json<StreamRequest>,
) -> Result<Response, AppError> {
    if req.digests.is_empty() || req.digests.len() > STREAM_MAX {
        return Err(AppError::invalid("digests", format!("1 to {STREAM_MAX} chunk digests")));
    }
    let digests = req.digests.iter().map(|d| parse_digest(d)).collect::<Result<Vec<_>, _>>()?;
    let store = st.store.clone();
    let total = {
        let digests = digests.clone();
        let store = store.clone();
        blocking(move || {
            let mut total = 0u64;
            for d in &digests {
                let n = store
                    .chunk_stored_size(d)
                    .ok_or_else(|| AppError::NotFound(format!("chunk {d} is not in the store")))?;
                total += 32 + 4 + n;
            }
            Ok(total)
        })
        .await?
    };
    // Two chunks in flight: the reader stays ahead of the socket without holding the image.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    tokio::task::spawn_blocking(move || {
        for d in digests {
            let frame = store.read_chunk(&d).map_err(std::io::Error::other).map(|body| {
                let mut f = Vec::with_capacity(36 + body.len());
                f.extend_from_slice(&d.0);
                f.extend_from_slice(&(body.len() as u32).to_be_bytes());
                f.extend_from_slice(&body);
                f
            });
            let failed = frame.is_err();
            if tx.blocking_send(frame).is_err() || failed {
                // Client gone, or a chunk vanished (gc): the error aborts the response.
                return;
            }
        }
    });
    let body = axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-parc-chunks".to_string()), (header::CONTENT_LENGTH, total.to_string())],
        body,
    )
        .into_response())
}

#[derive(Debug, Serialize)]
pub struct Resolved {
    pub reference: String,
    pub digest: Digest,
}

pub async fn image_resolve(
    State(st): State<AppState>,
    reader: ImageReader,
    crate::api::Path(reference): crate::api::Path<String>,
) -> Result<Json<Resolved>, AppError> {
    reader.require_resolve(&reference)?;
    let store = st.store.clone();
    let r = reference.clone();
    let digest = blocking(move || Ok(store.resolve(&r)?)).await?;
    Ok(Json(Resolved { reference, digest }))
}

pub async fn images_list(State(st): State<AppState>, _caller: Caller) -> Result<Json<serde_json::Value>, AppError> {
    let store = st.store.clone();
    let names = blocking(move || Ok(store.names()?)).await?;
    Ok(Json(serde_json::to_value(names).map_err(|e| AppError::Internal(e.to_string()))?))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn chunk_headers_range_and_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let (state, _) = AppState::open(tmp.path(), None).unwrap();
        let d = Digest::of(b"chunk");
        state.store.put_chunk_now(&d, b"0123456789").unwrap();
        let app = crate::app(state);
        let get = |uri: String, range: Option<&str>| {
            let mut r = Request::get(uri);
            if let Some(v) = range {
                r = r.header("range", v);
            }
            app.clone().oneshot(r.body(Body::empty()).unwrap())
        };
        let r = get(format!("/chunks/{d}"), None).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["etag"], format!("\"{d}\"").as_str());
        assert_eq!(r.headers()["cache-control"], IMMUTABLE);
        let r = get(format!("/chunks/{d}"), Some("bytes=2-4")).await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers()["content-range"], "bytes 2-4/10");
        let body = axum::body::to_bytes(r.into_body(), 100).await.unwrap();
        assert_eq!(&body[..], b"234");
        let r = get(format!("/chunks/{d}"), Some("bytes=20-")).await.unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        let r = get(format!("/chunks/{}", Digest::of(b"nope")), None).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = get("/chunks/..%2F..%2Fetc%2Fpasswd".to_string(), None).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        // Image names are for credentials' holders (chunks are not).
        let r = get("/api/v1/images/none".to_string(), None).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
}
