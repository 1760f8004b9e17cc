//! Asking the directory: over LDAPS or StartTLS only (rustls), one connection per login.
//! Users and groups are looked up with the service account (or anonymously), then the
//! password is checked by binding as the user: the directory's own rules (disabled, locked,
//! expired) decide.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::{fill, valid_login, Breaker, DirectoryConfig, DirectoryUser, Outcome};

/// The system's CA bundle (Debian's ca-certificates), when no `ca_file` is given.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// LDAP result code of a bind with a wrong password or a refused account (RFC 4511).
const INVALID_CREDENTIALS: u32 = 49;

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Config(#[from] super::ConfigError),
    #[error("[directory] ca_file {path}: {reason}")]
    Roots { path: String, reason: String },
}

/// A configured directory, ready to check logins.
#[derive(Debug)]
pub struct Directory {
    config: DirectoryConfig,
    tls: Arc<rustls::ClientConfig>,
    breaker: Breaker,
}

impl Directory {
    pub fn new(config: DirectoryConfig) -> Result<Directory, DirectoryError> {
        config.check()?;
        let path = config.ca_file.clone().unwrap_or_else(|| SYSTEM_ROOTS.into());
        let tls = Arc::new(client_config(&path)?);
        Ok(Directory { config, tls, breaker: Breaker::default() })
    }

    pub fn config(&self) -> &DirectoryConfig {
        &self.config
    }

    /// The directory's answer about `login` and `password`; never an error, since each way
    /// of failing is an answer the caller journals.
    pub async fn authenticate(&self, login: &str, password: &str) -> Outcome {
        if !valid_login(login) {
            return Outcome::Refused { detail: "not a login".into() };
        }
        // A simple bind with an empty password is an anonymous bind that succeeds (RFC 4513
        // §5.1.2): it must never count as the right password.
        if password.is_empty() {
            return Outcome::Refused { detail: "empty password".into() };
        }
        if let Some(why) = self.breaker.open_reason(Instant::now()) {
            return Outcome::Unreachable { why, asked: false };
        }
        let limit = self.config.timeout * 4;
        let answer = match tokio::time::timeout(limit, self.ask(login, password)).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
        };
        match answer {
            Ok(outcome) => {
                self.breaker.reset();
                outcome
            }
            Err(why) => {
                self.breaker.trip(Instant::now(), &why);
                Outcome::Unreachable { why, asked: true }
            }
        }
    }

    /// `Err`: why the directory could not be asked.
    async fn ask(&self, login: &str, password: &str) -> Result<Outcome, String> {
        let c = &self.config;
        let settings =
            LdapConnSettings::new().set_conn_timeout(c.timeout).set_starttls(c.starttls).set_config(self.tls.clone());
        let (conn, mut ldap) = match LdapConnAsync::with_settings(settings, &c.url).await {
            Ok(pair) => pair,
            Err(e) => return Err(format!("{}: {e}", c.url)),
        };
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "directory connection ended");
            }
        });
        let outcome = self.ask_on(&mut ldap, login, password).await;
        let _ = ldap.unbind().await;
        driver.abort();
        outcome
    }

    async fn ask_on(&self, ldap: &mut Ldap, login: &str, password: &str) -> Result<Outcome, String> {
        let c = &self.config;
        if let (Some(dn), Some(pw)) = (&c.bind_dn, &c.bind_password) {
            match ldap.with_timeout(c.timeout).simple_bind(dn, pw).await.and_then(|r| r.success()) {
                Ok(_) => {}
                Err(e) => return Err(format!("the service account {dn} was refused: {e}")),
            }
        }
        let filter = fill(&c.user_filter, "{login}", login);
        let attrs = ["cn", "displayName", "mail", "memberOf"];
        let entries = match ldap
            .with_timeout(c.timeout)
            .search(&c.user_base, Scope::Subtree, &filter, attrs.to_vec())
            .await
            .and_then(|r| r.success())
        {
            Ok((entries, _)) => {
                entries.into_iter().filter(|e| !e.is_ref()).map(SearchEntry::construct).collect::<Vec<_>>()
            }
            Err(e) => return Err(format!("searching {} for {filter}: {e}", c.user_base)),
        };
        let entry = match entries.as_slice() {
            [one] => one,
            [] => return Ok(Outcome::Refused { detail: format!("no entry under {} matches {filter}", c.user_base) }),
            many => return Ok(Outcome::Refused { detail: format!("{} entries match {filter}", many.len()) }),
        };
        let groups = match &c.group_base {
            Some(base) => {
                let gfilter = fill(&c.group_filter, "{dn}", &entry.dn);
                match ldap
                    .with_timeout(c.timeout)
                    .search(base, Scope::Subtree, &gfilter, vec!["1.1"])
                    .await
                    .and_then(|r| r.success())
                {
                    Ok((entries, _)) => {
                        entries.into_iter().filter(|e| !e.is_ref()).map(|e| SearchEntry::construct(e).dn).collect()
                    }
                    Err(e) => return Err(format!("searching {base} for {gfilter}: {e}")),
                }
            }
            None => attr(entry, "memberOf").to_vec(),
        };
        match ldap.with_timeout(c.timeout).simple_bind(&entry.dn, password).await {
            Ok(r) if r.rc == 0 => {}
            Ok(r) if r.rc == INVALID_CREDENTIALS => {
                // Active Directory says why in the text ("data 533": disabled, "775": locked).
                return Ok(Outcome::Refused {
                    detail: format!("bind as {} refused: invalid credentials {}", entry.dn, r.text),
                });
            }
            Ok(r) => {
                return Ok(Outcome::Refused {
                    detail: format!("bind as {} refused: result {} {}", entry.dn, r.rc, r.text),
                })
            }
            Err(e) => return Err(format!("binding as {}: {e}", entry.dn)),
        }
        let Some(role) = c.role_for(&groups) else { return Ok(Outcome::NoRole { dn: entry.dn.clone() }) };
        let first = |name: &str| attr(entry, name).first().cloned().unwrap_or_default();
        let name = Some(first("displayName")).filter(|n| !n.is_empty()).unwrap_or_else(|| first("cn"));
        Ok(Outcome::Accepted(DirectoryUser {
            login: login.to_lowercase(),
            dn: entry.dn.clone(),
            name,
            email: first("mail"),
            role,
        }))
    }
}

/// An attribute's values, whatever case the server spells its name in.
fn attr<'a>(entry: &'a SearchEntry, name: &str) -> &'a [String] {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice()).unwrap_or(&[])
}

fn client_config(roots_file: &Path) -> Result<rustls::ClientConfig, DirectoryError> {
    let bad = |reason: String| DirectoryError::Roots { path: roots_file.display().to_string(), reason };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(roots_file).map_err(|e| bad(e.to_string()))?;
    for cert in certs {
        roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
