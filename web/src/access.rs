//! Who may read images: a technician's API token (any role), or a running task's agent
//! session for its own image only. Chunks are not behind this: a chunk is named by its
//! sha256, which only a manifest tells, and chunk requests carry no credential so that a
//! remote site's HTTP cache can answer them (see README, "Images on the network").

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::auth::{token_hash, Caller};
use crate::db::Task;
use crate::{blocking, AppError, AppState};

/// A caller allowed to read some images.
#[derive(Debug, Clone)]
pub enum ImageReader {
    /// A technician's token: every image.
    User,
    /// A running task's agent: its own image only.
    Task(Box<Task>),
}

impl ImageReader {
    /// May read the manifest with this digest.
    pub fn may_read_manifest(&self, digest: &str) -> bool {
        match self {
            ImageReader::User => true,
            ImageReader::Task(t) => t.image_digest.as_deref() == Some(digest),
        }
    }

    /// May resolve this name or digest.
    pub fn may_resolve(&self, reference: &str) -> bool {
        match self {
            ImageReader::User => true,
            ImageReader::Task(t) => {
                t.image_ref.as_deref() == Some(reference) || t.image_digest.as_deref() == Some(reference)
            }
        }
    }

    fn refused(what: &str) -> AppError {
        // Not 404: the image may exist, the caller is simply not the one to read it.
        AppError::Forbidden(format!("this agent session may read its own task's image only, not {what}"))
    }

    pub fn require_manifest(&self, digest: &str) -> Result<(), AppError> {
        if self.may_read_manifest(digest) {
            Ok(())
        } else {
            Err(Self::refused(&format!("manifest {digest}")))
        }
    }

    pub fn require_resolve(&self, reference: &str) -> Result<(), AppError> {
        if self.may_resolve(reference) {
            Ok(())
        } else {
            Err(Self::refused(&format!("image {reference:?}")))
        }
    }
}

impl FromRequestParts<AppState> for ImageReader {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        let agent_session = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| t.starts_with("pa_"))
            .map(str::to_string);
        if let Some(token) = agent_session {
            let db = st.db.clone();
            return blocking(move || match db.task_by_token(&token_hash(&token))? {
                Some(t) if t.state.is_active() => Ok(ImageReader::Task(Box::new(t))),
                Some(t) => Err(AppError::Unauthorized(format!(
                    "task #{} is {}; its agent session has ended",
                    t.id,
                    t.state.as_str()
                ))),
                None => Err(AppError::Unauthorized("unknown or superseded agent session".into())),
            })
            .await;
        }
        Caller::from_request_parts(parts, st).await.map(|_| ImageReader::User)
    }
}
