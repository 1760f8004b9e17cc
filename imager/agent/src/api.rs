//! The agent's side of `/api/v1/agent/*`. Transient failures (server restarting, network
//! hiccup, 5xx) are retried for a while, so a server restarted mid-deploy loses nothing;
//! a 401 (credential unknown, used or superseded) or 409 (task cancelled or ended) is final.
//! The boot script's credential is good for one hello, which answers with the session the
//! agent uses from then on.

use std::thread::sleep;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::disk::DiskRule;
use crate::hardware::Hardware;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("{url}: the appliance refused: {status} {message}")]
    Refused { url: String, status: u16, message: String },
    #[error("{url}: unreachable for {seconds} s ({reason})")]
    Unreachable { url: String, seconds: u64, reason: String },
    #[error("{url}: unexpected answer: {reason}")]
    BadAnswer { url: String, reason: String },
}

#[derive(Debug, Clone, Deserialize)]
pub struct HelloReply {
    pub known: bool,
    pub hostname: Option<String>,
    pub department: Option<String>,
    pub task: Option<Work>,
    /// The session to use from now on (the task's, or a standby one while waiting); `None`:
    /// keep the current one.
    #[serde(default)]
    pub session_token: Option<String>,
    /// The installed system's single-use credential for its first-boot report.
    #[serde(default)]
    pub first_boot_token: Option<String>,
    /// The machine's latest task when it ended failed or cancelled (and nothing newer
    /// succeeded): what the screen shows while the machine waits for a technician.
    #[serde(default)]
    pub last_task: Option<LastTask>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LastTask {
    pub id: i64,
    pub kind: String,
    pub state: String,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Work {
    pub id: i64,
    pub kind: String,
    pub mac: String,
    pub hostname: Option<String>,
    pub department: Option<DepartmentWork>,
    pub image: Option<ImageRef>,
    pub replaces: Option<String>,
    pub profiles_commit: String,
    pub disk_serial: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DepartmentWork {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub disk: DiskRule,
    #[serde(default)]
    pub payloads: Vec<String>,
    #[serde(default)]
    pub first_boot: Option<String>,
    /// `"linux"` (the default) or `"windows"`.
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub windows: Option<WindowsWork>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WindowsWork {
    pub time_zone: String,
    #[serde(default)]
    pub domain_ou: Option<String>,
}

/// The machine's offline domain join, made by the appliance for this task.
#[derive(Debug, Clone, Deserialize)]
pub struct DomainJoin {
    pub domain: String,
    pub machine: String,
    /// `AccountData` of the answer file: base64 of the provisioning blob.
    pub account_data: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageRef {
    pub reference: String,
    pub digest: Option<String>,
}

/// A file of the department profile to put on the installed system.
#[derive(Debug, Clone, Deserialize)]
pub struct ProfileFile {
    /// Where it goes, relative to the installed system's root.
    pub dest: String,
    /// Its path in the profiles repository (what `file` takes).
    pub source: String,
    pub mode: u32,
    pub size: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProgressReport {
    pub phase: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub bytes_fetched: u64,
    pub rate_bps: u64,
    pub message: Option<String>,
}

#[derive(Debug)]
pub struct AgentApi {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    retry_for: Duration,
}

impl AgentApi {
    pub fn new(base: &str, token: Option<String>, retry_for: Duration) -> AgentApi {
        let agent = parc_imager::store::http::client(Duration::from_secs(60));
        AgentApi { base: base.trim_end_matches('/').to_string(), token, agent, retry_for }
    }

    pub fn set_token(&mut self, token: String) {
        self.token = Some(token);
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// One request with retries; `body` None is a GET.
    fn call(&self, path: &str, body: Option<&serde_json::Value>) -> Result<Vec<u8>, ApiError> {
        let url = format!("{}{path}", self.base);
        let started = Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            let res = match body {
                None => self.auth(self.agent.get(&url)).call(),
                Some(b) => self
                    .auth(self.agent.post(&url))
                    .header("Content-Type", "application/json")
                    .send(&serde_json::to_vec(b).expect("serialisable")[..]),
            };
            let reason = match res {
                Ok(mut r) => {
                    let status = r.status().as_u16();
                    let bytes = r.body_mut().with_config().limit(64 << 20).read_to_vec();
                    match (status, bytes) {
                        (200..=299, Ok(b)) => return Ok(b),
                        (s, Ok(b)) if s < 500 && s != 429 => {
                            let message = serde_json::from_slice::<serde_json::Value>(&b)
                                .ok()
                                .and_then(|v| v["error"].as_str().map(str::to_string))
                                .unwrap_or_else(|| String::from_utf8_lossy(&b).chars().take(300).collect());
                            return Err(ApiError::Refused { url, status: s, message });
                        }
                        (s, Ok(_)) => format!("server answered {s}"),
                        (_, Err(e)) => format!("reading the answer: {e}"),
                    }
                }
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= self.retry_for {
                return Err(ApiError::Unreachable { url, seconds: started.elapsed().as_secs(), reason });
            }
            tracing::warn!(url = %url, reason = %reason, "appliance unreachable, retrying");
            sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    fn auth<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => r.header("Authorization", &format!("Bearer {t}")),
            None => r,
        }
    }

    fn json<T: DeserializeOwned>(&self, path: &str, body: Option<&serde_json::Value>) -> Result<T, ApiError> {
        let bytes = self.call(path, body)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadAnswer { url: format!("{}{path}", self.base), reason: e.to_string() })
    }

    pub fn hello(&self, hw: &Hardware) -> Result<HelloReply, ApiError> {
        self.json("/api/v1/agent/hello", Some(&serde_json::to_value(hw).expect("serialisable")))
    }

    /// Reports progress; false when the appliance says stop (task cancelled or ended).
    pub fn progress(&self, p: &ProgressReport) -> Result<bool, ApiError> {
        let v: serde_json::Value =
            self.json("/api/v1/agent/progress", Some(&serde_json::to_value(p).expect("serialisable")))?;
        Ok(v["continue"].as_bool().unwrap_or(true))
    }

    pub fn done(
        &self,
        verified: bool,
        image_digest: &str,
        bytes_fetched: u64,
        disk: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        let body = serde_json::json!({ "verified": verified, "image_digest": image_digest, "bytes_fetched": bytes_fetched, "disk": disk, "message": message });
        self.call("/api/v1/agent/done", Some(&body)).map(drop)
    }

    pub fn failed(&self, reason: &str, chunk: Option<&str>) -> Result<(), ApiError> {
        let body = serde_json::json!({ "reason": reason, "chunk": chunk });
        self.call("/api/v1/agent/failed", Some(&body)).map(drop)
    }

    /// Asks the appliance to provision this machine's computer account (new, or the existing
    /// one reused) and answers its join blob; only the task's session may.
    pub fn domain_join(&self) -> Result<DomainJoin, ApiError> {
        self.json("/api/v1/agent/domain-join", Some(&serde_json::json!({})))
    }

    pub fn profile_files(&self) -> Result<Vec<ProfileFile>, ApiError> {
        self.json("/api/v1/agent/files", None)
    }

    pub fn profile_file(&self, source: &str) -> Result<Vec<u8>, ApiError> {
        let mut q = String::new();
        for b in source.bytes() {
            if b.is_ascii_alphanumeric() || b"-_./".contains(&b) {
                q.push(b as char);
            } else {
                q.push_str(&format!("%{b:02X}"));
            }
        }
        self.call(&format!("/api/v1/agent/file?path={q}"), None)
    }
}
