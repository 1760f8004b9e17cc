//! Chunk and manifest serving: content-addressed, so immutable and cacheable forever.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use parc_imager::digest::Digest;
use parc_imager::store::ChunkSource;
use serde::Serialize;

use crate::range::{self, RangeRequest};
use crate::{AppError, AppState};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn parse_digest(s: &str) -> Result<Digest, AppError> {
    s.parse().map_err(|e: parc_imager::digest::ParseDigestError| AppError::BadRequest(e.to_string()))
}

/// Runs blocking store I/O off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, AppError> + Send + 'static) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AppError::Internal(e.to_string()))?
}

pub async fn chunk_get(State(st): State<AppState>, Path(digest): Path<String>, headers: HeaderMap) -> Result<Response, AppError> {
    let d = parse_digest(&digest)?;
    let store = st.store.clone();
    let body = blocking(move || Ok(store.read_chunk(&d)?)).await?;
    Ok(immutable_body(&d, body, "application/zstd", &headers))
}

pub async fn manifest_get(
    State(st): State<AppState>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let d = parse_digest(&digest)?;
    let store = st.store.clone();
    let body = blocking(move || Ok(store.read_manifest(&d)?)).await?;
    Ok(immutable_body(&d, body, "application/json", &headers))
}

/// A content-addressed body: strong ETag (the digest), conditional GET, single-range requests.
fn immutable_body(d: &Digest, body: Vec<u8>, content_type: &'static str, headers: &HeaderMap) -> Response {
    let etag = format!("\"{d}\"");
    let mut resp_headers = HeaderMap::new();
    resp_headers.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex is a valid header"));
    resp_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
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

#[derive(Debug, Serialize)]
pub struct Resolved {
    pub reference: String,
    pub digest: Digest,
}

pub async fn image_resolve(State(st): State<AppState>, Path(reference): Path<String>) -> Result<Json<Resolved>, AppError> {
    let store = st.store.clone();
    let r = reference.clone();
    let digest = blocking(move || Ok(store.resolve(&r)?)).await?;
    Ok(Json(Resolved { reference, digest }))
}

pub async fn images_list(State(st): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    let store = st.store.clone();
    let names = blocking(move || Ok(store.names()?)).await?;
    Ok(Json(serde_json::to_value(names).map_err(|e| AppError::Internal(e.to_string()))?))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use parc_imager::store::DirStore;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn chunk_headers_range_and_errors() {
        let dir = std::env::temp_dir().join(format!("parc-web-test-{}", std::process::id()));
        let store = DirStore::create(&dir).unwrap();
        let d = Digest::of(b"chunk");
        store.put_chunk_now(&d, b"0123456789").unwrap();
        let app = crate::app(AppState { store: Arc::new(store), netboot_dir: dir.join("netboot") });
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
        let r = get("/api/v1/images/none".to_string(), None).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
