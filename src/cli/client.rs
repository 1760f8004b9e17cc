//! Talking to `parc serve` from the command line: where the server is and which token to
//! present come from flags, then the environment (`PARC_SERVER`, `PARC_TOKEN`), then the file
//! written by `parc login` (`$PARC_CONFIG` or `~/.config/parc/cli.toml`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;

const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The appliance, e.g. http://parc.example:8080 [env PARC_SERVER; `parc login` saves it].
    #[arg(long, global = true)]
    server: Option<String>,
    /// Machine-readable output on stdout.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedConfig {
    server: Option<String>,
    token: Option<String>,
    /// The appliance's own CA, pinned by `parc login --fingerprint`.
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PARC_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".config/parc/cli.toml"))
}

fn saved() -> Result<SavedConfig> {
    let Some(path) = config_path() else { return Ok(SavedConfig::default()) };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("{} is not valid", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SavedConfig::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// An API error: the server's message, and its status for exit codes.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub body: Value,
}

/// The API token this CLI presents: `PARC_TOKEN`, else the one `parc login` saved.
pub fn saved_token() -> Result<Option<String>> {
    Ok(std::env::var("PARC_TOKEN").ok().filter(|t| !t.is_empty()).or(saved()?.token))
}

#[derive(Debug)]
pub struct Client {
    pub base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(args: &ServerArgs) -> Result<Client> {
        let saved = saved()?;
        let base = args
            .server
            .clone()
            .or_else(|| std::env::var("PARC_SERVER").ok())
            .or(saved.server)
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        let token = std::env::var("PARC_TOKEN").ok().filter(|t| !t.is_empty()).or(saved.token);
        Ok(Client::with(base, token, saved.ca_file.as_deref()))
    }

    fn with(base: String, token: Option<String>, ca_file: Option<&std::path::Path>) -> Client {
        let roots = parc_imager::store::http::trust(ca_file);
        let agent = parc_imager::store::http::client_trusting(Duration::from_secs(600), &roots);
        Client { base: base.trim_end_matches('/').to_string(), token, agent }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn finish(&self, what: &str, res: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Value> {
        let mut resp = res.with_context(|| format!("{what}: cannot reach the appliance at {}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().with_config().limit(256 << 20).read_to_string().context("reading the answer")?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            let mut message = body.get("error").and_then(Value::as_str).unwrap_or("error").to_string();
            if status == 401 && self.token.is_none() {
                message.push_str(" (no token: run `parc login` or set PARC_TOKEN)");
            }
            return Err(ApiError { status, message, body }.into());
        }
        Ok(body)
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        let req = self.auth(self.agent.get(&self.url(path)));
        self.finish(&format!("GET {path}"), req.call())
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send("POST", path, body, None)
    }

    pub fn send(&self, method: &str, path: &str, body: &Value, if_match: Option<&str>) -> Result<Value> {
        let url = self.url(path);
        let bytes = serde_json::to_vec(body)?;
        let res = match method {
            "PATCH" => {
                let mut r = self.auth(self.agent.patch(&url)).header("Content-Type", "application/json");
                if let Some(e) = if_match {
                    r = r.header("If-Match", &format!("\"{e}\""));
                }
                r.send(&bytes[..])
            }
            _ => self.auth(self.agent.post(&url)).header("Content-Type", "application/json").send(&bytes[..]),
        };
        self.finish(&format!("{method} {path}"), res)
    }
}

/// Exit code for an error: 2 for a refused request (bad input, conflict), 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    match e.downcast_ref::<ApiError>() {
        Some(a) if (400..500).contains(&a.status) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

/// `path` with the given query parameters (absent ones left out).
pub fn with_query(path: &str, params: &[(&str, Option<&str>)]) -> String {
    let mut q = path.to_string();
    for (k, v) in params {
        if let Some(v) = v {
            q.push(if q.contains('?') { '&' } else { '?' });
            q.push_str(&format!("{k}={}", enc(v)));
        }
    }
    q
}

/// Prints `r` as JSON when asked; true if it did (the caller is done).
pub fn print_json(server: &ServerArgs, r: &Value) -> bool {
    if server.json {
        println!("{r}");
    }
    server.json
}

/// Percent-encodes a query value.
pub use parc_web::url_encode as enc;

#[derive(Debug, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Account to log in with.
    #[arg(long, default_value = "admin")]
    user: String,
    /// Name of the token created (shown in the journal).
    #[arg(long)]
    token_name: Option<String>,
    /// SHA-256 fingerprint of the appliance's own CA, as `parc serve` printed it: its
    /// certificate is fetched, checked against it, and trusted from then on.
    #[arg(long)]
    fingerprint: Option<String>,
}

/// Fetches `<base>/tls/ca.pem` (unverified: anyone could answer), checks it against the
/// fingerprint the technician gives, and saves it beside the CLI's settings.
fn pin_ca(base: &str, fingerprint: &str, config: &std::path::Path) -> Result<PathBuf> {
    let agent = parc_imager::store::http::client_unverified(Duration::from_secs(30));
    let mut res =
        agent.get(&format!("{base}/tls/ca.pem")).call().with_context(|| format!("fetching {base}/tls/ca.pem"))?;
    let pem = res.body_mut().with_config().limit(64 << 10).read_to_vec().context("reading the CA certificate")?;
    let cert = ureq::tls::parse_pem(&pem)
        .find_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .with_context(|| format!("{base}/tls/ca.pem holds no certificate"))?;
    let got = parc_web::tls::fingerprint(cert.der());
    let norm = |f: &str| f.chars().filter(char::is_ascii_hexdigit).collect::<String>().to_ascii_uppercase();
    if norm(&got) != norm(fingerprint) {
        bail!(
            "the appliance at {base} presents a CA with fingerprint {got}, not {fingerprint}: \
             someone may be in the way, or this is another appliance; nothing was saved"
        );
    }
    let path = config.with_file_name("ca.pem");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_private(&path, &String::from_utf8_lossy(&pem))?;
    Ok(path)
}

/// Creates a token with login and password (read from PARC_PASSWORD or the terminal) and
/// saves server and token for later commands.
pub fn login(a: LoginArgs) -> Result<ExitCode> {
    let base = Client::new(&a.server)?.base;
    let config = config_path().context("no HOME and no PARC_CONFIG: nowhere to save the token")?;
    let ca_file = match &a.fingerprint {
        Some(f) => Some(pin_ca(&base, f, &config)?),
        None => saved()?.ca_file.filter(|_| a.server.server.is_none()),
    };
    let password = match std::env::var("PARC_PASSWORD") {
        Ok(p) => p,
        Err(_) => read_password(&format!("password for {} on {base}: ", a.user))?,
    };
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "cli".into());
    let name = a.token_name.unwrap_or_else(|| format!("parc login on {host}"));
    let client = Client::with(base.clone(), None, ca_file.as_deref());
    // The only two calls a login and password make.
    let post_basic = |path: &str, password: &str, body: serde_json::Value| {
        let basic = base64(&format!("{}:{}", a.user, password));
        let res = client
            .agent
            .post(&client.url(path))
            .header("Authorization", &format!("Basic {basic}"))
            .header("Content-Type", "application/json")
            .send(&serde_json::to_vec(&body)?[..]);
        client.finish(&format!("POST {path}"), res)
    };
    let create = |password: &str| post_basic("/tokens", password, serde_json::json!({ "name": name }));
    let body = match create(&password) {
        // A one-time password (first start, or reset by an admin): choose the real one now.
        Err(e)
            if e.downcast_ref::<ApiError>()
                .is_some_and(|a| a.status == 403 && a.message.contains("change its password")) =>
        {
            let new = match std::env::var("PARC_NEW_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    eprintln!("{}: this password must be changed before first use", a.user);
                    let p = read_password("new password (at least 12 characters): ")?;
                    if read_password("the new password again: ")? != p {
                        bail!("the two new passwords differ; nothing was changed");
                    }
                    p
                }
            };
            post_basic("/password", &password, serde_json::json!({ "new_password": new }))?;
            create(&new)?
        }
        r => r?,
    };
    let token = body["token"].as_str().context("the server returned no token")?.to_string();
    let path = config_path().context("no HOME and no PARC_CONFIG: nowhere to save the token")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = toml::to_string(&SavedConfig { server: Some(base.clone()), token: Some(token), ca_file })?;
    write_private(&path, &text)?;
    if a.server.json {
        println!("{}", serde_json::json!({ "ok": true, "server": base, "user": a.user, "config": path }));
    } else {
        println!(
            "logged in to {base} as {} ({}); token saved in {}",
            a.user,
            body["role"].as_str().unwrap_or("?"),
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

fn read_password(prompt: &str) -> Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    if tty {
        eprint!("{prompt}");
    }
    // Echo off while typing, restored afterwards.
    let saved = if tty { tcgetattr(&stdin).ok() } else { None };
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let mut line = String::new();
    let res = stdin.lock().read_line(&mut line);
    if let Some(t) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, t);
        eprintln!();
    }
    res.context("reading the password")?;
    let p = line.trim_end_matches(['\n', '\r']).to_string();
    if p.is_empty() {
        bail!("no password given");
    }
    Ok(p)
}

fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_encoding() {
        assert_eq!(base64("admin:s3cr3t:"), "YWRtaW46czNjcjN0Og==");
        assert_eq!(base64("a"), "YQ==");
        assert_eq!(enc("RAD 01/é"), "RAD%2001%2F%C3%A9");
    }
}
