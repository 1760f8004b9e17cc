//! Images in the store: each name's versions with their sizes from the manifests, the
//! departments that deploy them and the machines that run them.

use std::collections::{HashMap, HashSet};

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parc_imager::format::Manifest;
use parc_imager::store::ChunkSource as _;
use parc_imager::Digest;

use parc_imager::progress::NoProgress;

use crate::console::csrf::CsrfForm;
use crate::console::session::{self, Session};
use crate::console::{render, require_role, ConsoleError, OrPage, PageCtx};
use crate::db::{NewEvent, Role};
use crate::{blocking, AppError, AppState};

#[derive(Debug)]
pub struct Version {
    pub version: u32,
    pub digest: String,
    pub created_s: i64,
    pub source: String,
    /// Disk size, bytes the partitions use, bytes stored (compressed chunks).
    pub sizes: Option<(u64, u64, u64)>,
    pub chunks: usize,
    /// Chunks also used by another image of the store.
    pub shared: usize,
    pub departments: Vec<String>,
    pub machines: usize,
}

#[derive(Debug)]
pub struct Image {
    pub name: String,
    pub versions: Vec<Version>,
}

#[derive(Template)]
#[template(path = "images.html")]
pub struct ImagesPage {
    ctx: PageCtx,
    images: Vec<Image>,
}

pub async fn images_list(State(st): State<AppState>, s: Session) -> Result<Response, ConsoleError> {
    let ctx = PageCtx::new(&s, "images");
    let page = blocking(move || Ok(ImagesPage { ctx, images: images(&st)? })).await.or_page(&s)?;
    Ok(render(&page, &page.ctx, StatusCode::OK))
}

fn images(st: &AppState) -> Result<Vec<Image>, AppError> {
    let names = st.store.names()?;
    let snap = st.profiles.snapshot();
    // Which departments deploy which digest now (a department names an image or a version).
    let mut deployed_by: HashMap<String, Vec<String>> = HashMap::new();
    for d in snap.departments.values() {
        if let Ok(dg) = st.store.resolve(&d.image) {
            deployed_by.entry(dg.to_string()).or_default().push(d.name.clone());
        }
    }
    let mut on_image: HashMap<String, usize> = HashMap::new();
    for m in st.db.machine_states()? {
        if let Some(d) = m.image_digest {
            *on_image.entry(d).or_default() += 1;
        }
    }
    let manifests: HashMap<String, Option<Manifest>> =
        names.iter().map(|n| (n.record.digest.to_string(), st.store.manifest(&n.record.digest).ok())).collect();
    // How many manifests use each chunk, to tell what an image shares with the others.
    let mut users: HashMap<Digest, usize> = HashMap::new();
    for m in manifests.values().flatten() {
        let unique: HashSet<Digest> = m.all_chunks().map(|c| c.sha256).collect();
        for c in unique {
            *users.entry(c).or_default() += 1;
        }
    }
    let mut out: Vec<Image> = Vec::new();
    for n in &names {
        let digest = n.record.digest.to_string();
        let manifest = manifests.get(&digest).and_then(Option::as_ref);
        let (sizes, chunks, shared) = match manifest {
            Some(m) => {
                let unique: HashSet<Digest> = m.all_chunks().map(|c| c.sha256).collect();
                let stored: u64 = unique.iter().filter_map(|d| st.store.chunk_stored_size(d)).sum();
                let shared = unique.iter().filter(|c| users.get(*c).is_some_and(|u| *u > 1)).count();
                (Some((m.disk.size, m.used_bytes(), stored)), unique.len(), shared)
            }
            None => (None, 0, 0),
        };
        let v = Version {
            version: n.version,
            created_s: n.record.created as i64,
            source: n.record.source.clone(),
            sizes,
            chunks,
            shared,
            departments: deployed_by.get(&digest).cloned().unwrap_or_default(),
            machines: on_image.get(&digest).copied().unwrap_or(0),
            digest,
        };
        match out.last_mut() {
            Some(i) if i.name == n.name => i.versions.push(v),
            _ => out.push(Image { name: n.name.clone(), versions: vec![v] }),
        }
    }
    for i in &mut out {
        i.versions.sort_by_key(|v| std::cmp::Reverse(v.version));
    }
    Ok(out)
}

/// Re-reads every chunk of one image version and checks its digest; the result is journaled
/// and shown. Holds the store's shared lock, so garbage collection cannot delete chunks while
/// they are read.
pub async fn image_verify(State(st): State<AppState>, form: CsrfForm) -> Result<Response, ConsoleError> {
    let s = form.session.clone();
    let caller = require_role(&st, &s, Role::Technician).await?;
    let Some(image) = form.get("image") else {
        return Err(ConsoleError::new(&s, AppError::invalid("image", "required")));
    };
    let msg = blocking(move || {
        let _lock = st.store.lock_shared()?;
        let report = parc_imager::inspect::verify(&st.store, std::slice::from_ref(&image), &NoProgress).map_err(
            |e| match e {
                parc_imager::error::Error::Store(e) => AppError::from(e),
                other => AppError::Internal(other.to_string()),
            },
        )?;
        let msg = if report.ok() {
            format!(
                "image {image} verified by {}: {} chunks ({} bytes) intact",
                caller.login(),
                report.chunks_checked,
                report.bytes_checked
            )
        } else {
            format!(
                "image {image} verified by {}: {} chunks corrupt, {} missing, {} manifests unreadable{}",
                caller.login(),
                report.bad.len(),
                report.missing.len(),
                report.bad_manifests.len(),
                report.bad.first().map(|b| format!(" (first: {} {})", b.digest, b.reason)).unwrap_or_default()
            )
        };
        let kind = if report.ok() { "image.verify" } else { "image.verify.failed" };
        st.event(&NewEvent { actor: caller.login(), kind, mac: None, task_id: None, message: &msg, data: None })?;
        Ok(msg)
    })
    .await
    .or_page(&s)?;
    Ok(session::redirect_with_flash("/images", &msg, s.secure))
}
