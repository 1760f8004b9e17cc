//! Technicians' logins against the hospital's directory (Active Directory or any LDAP server):
//! find the user's entry, bind as it with the password typed, map its groups to a parc role.
//! This module holds the settings and the pure parts (filters, group matching); `ldap` talks
//! to the server.

mod ldap;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::db::Role;

pub use ldap::Directory;

/// `[directory]` of parc.toml, checked.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// `ldaps://host[:636]`, or `ldap://host[:389]` with `starttls`.
    pub url: String,
    pub starttls: bool,
    /// PEM CA certificates that signed the directory's certificate; the system's roots
    /// otherwise.
    pub ca_file: Option<PathBuf>,
    /// The service account that searches for users; anonymous search when `None`.
    pub bind_dn: Option<String>,
    pub bind_password: Option<String>,
    /// Where users are searched (subtree).
    pub user_base: String,
    /// With `{login}` where the login typed goes, escaped (RFC 4515).
    pub user_filter: String,
    /// Where groups are searched, with `group_filter`; without it, the user entry's `memberOf`
    /// values are the groups.
    pub group_base: Option<String>,
    /// With `{dn}` where the user's DN goes, escaped. Active Directory's nested groups:
    /// `(member:1.2.840.113556.1.4.1941:={dn})`.
    pub group_filter: String,
    /// Group DNs giving each role; the highest role wins.
    pub admin_groups: Vec<String>,
    pub technician_groups: Vec<String>,
    pub readonly_groups: Vec<String>,
    /// Connecting, each operation.
    pub timeout: Duration,
}

/// Active Directory's user filter: a person's account, by its pre-Windows 2000 name.
pub const AD_USER_FILTER: &str = "(&(objectClass=user)(sAMAccountName={login}))";
pub const DEFAULT_GROUP_FILTER: &str = "(member={dn})";
/// After the directory could not be reached, logins do not try again for this long: a dead
/// server must not make every login (the local admin's included) wait for a timeout.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("[directory] url {0:?}: give ldaps://host or ldap://host with starttls = true")]
    BadUrl(String),
    #[error(
        "[directory] url {0:?} without starttls would send passwords in clear: use ldaps:// or set starttls = true"
    )]
    Plaintext(String),
    #[error("[directory] {0} must contain {1}")]
    MissingPlaceholder(&'static str, &'static str),
    #[error("[directory] names no group in admin_groups, technician_groups or readonly_groups: nobody could log in")]
    NoGroups,
    #[error("[directory] bind_dn needs bind_password_file (and the other way round)")]
    HalfBind,
}

impl DirectoryConfig {
    /// Refuses settings that would send passwords in clear or let nobody in.
    pub fn check(&self) -> Result<(), ConfigError> {
        let url = self.url.to_ascii_lowercase();
        if url.starts_with("ldap://") {
            if !self.starttls {
                return Err(ConfigError::Plaintext(self.url.clone()));
            }
        } else if !url.starts_with("ldaps://") || url.len() <= "ldaps://".len() {
            return Err(ConfigError::BadUrl(self.url.clone()));
        }
        if !self.user_filter.contains("{login}") {
            return Err(ConfigError::MissingPlaceholder("user_filter", "{login}"));
        }
        if self.group_base.is_some() && !self.group_filter.contains("{dn}") {
            return Err(ConfigError::MissingPlaceholder("group_filter", "{dn}"));
        }
        if self.admin_groups.is_empty() && self.technician_groups.is_empty() && self.readonly_groups.is_empty() {
            return Err(ConfigError::NoGroups);
        }
        if self.bind_dn.is_some() != self.bind_password.is_some() {
            return Err(ConfigError::HalfBind);
        }
        Ok(())
    }

    /// The highest role any of `groups` gives, if any.
    pub fn role_for(&self, groups: &[String]) -> Option<Role> {
        let has = |wanted: &[String]| groups.iter().any(|g| wanted.iter().any(|w| same_dn(g, w)));
        if has(&self.admin_groups) {
            Some(Role::Admin)
        } else if has(&self.technician_groups) {
            Some(Role::Technician)
        } else if has(&self.readonly_groups) {
            Some(Role::Readonly)
        } else {
            None
        }
    }
}

/// Whether a login may be looked up at all: what a person types, not a filter.
pub fn valid_login(login: &str) -> bool {
    !login.is_empty() && login.len() <= 256 && !login.chars().any(|c| c.is_control())
}

/// `template` with `{placeholder}` replaced by `value` escaped for a search filter (RFC 4515),
/// so a login such as `*)(uid=*` matches nobody instead of everybody.
pub fn fill(template: &str, placeholder: &str, value: &str) -> String {
    template.replace(placeholder, &::ldap3::ldap_escape(value))
}

/// DNs compare case-insensitively and without the spaces people put after commas
/// (`CN=Parc Admins, OU=Groupes` is `cn=parc admins,ou=groupes`).
pub fn same_dn(a: &str, b: &str) -> bool {
    normalize_dn(a) == normalize_dn(b)
}

fn normalize_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| rdn.split('=').map(str::trim).collect::<Vec<_>>().join("="))
        .collect::<Vec<_>>()
        .join(",")
        .to_lowercase()
}

/// What the directory said about a login and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Bound as the user, who is in a group mapped to `role`.
    Accepted(DirectoryUser),
    /// No such user, several, a wrong password, or an account the directory refuses (disabled,
    /// locked): `detail` is for the journal, never for the person typing.
    Refused { detail: String },
    /// The password was right but no group of the user gives a parc role.
    NoRole { dn: String },
    /// The directory could not be asked: connection, TLS, timeout, or the service account's
    /// bind failed. `asked`: false when it was not tried again, having failed moments ago.
    Unreachable { why: String, asked: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    /// As the directory spells it (the login typed may differ in case).
    pub login: String,
    pub dn: String,
    pub name: String,
    pub email: String,
    pub role: Role,
}

/// Remembers when the directory was last unreachable, to answer at once for a while.
#[derive(Debug, Default)]
pub(crate) struct Breaker(Mutex<Option<(Instant, String)>>);

impl Breaker {
    pub(crate) fn open_reason(&self, now: Instant) -> Option<String> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref().filter(|(at, _)| now.duration_since(*at) < RETRY_AFTER).map(|(_, why)| why.clone())
    }
    pub(crate) fn trip(&self, now: Instant, why: &str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, why.to_string()));
    }
    pub(crate) fn reset(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DirectoryConfig {
        DirectoryConfig {
            url: "ldaps://ad.hopital.local".into(),
            starttls: false,
            ca_file: None,
            bind_dn: None,
            bind_password: None,
            user_base: "dc=hopital,dc=local".into(),
            user_filter: AD_USER_FILTER.into(),
            group_base: None,
            group_filter: DEFAULT_GROUP_FILTER.into(),
            admin_groups: vec!["CN=GG-Parc-Admins, OU=Groupes,DC=hopital,DC=local".into()],
            technician_groups: vec!["cn=gg-parc-techniciens,ou=groupes,dc=hopital,dc=local".into()],
            readonly_groups: vec![],
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn passwords_never_travel_in_clear() {
        let mut c = config();
        assert_eq!(c.check(), Ok(()));
        c.url = "ldap://ad.hopital.local".into();
        assert!(matches!(c.check(), Err(ConfigError::Plaintext(_))));
        c.starttls = true;
        assert_eq!(c.check(), Ok(()));
        c.url = "http://ad".into();
        assert!(matches!(c.check(), Err(ConfigError::BadUrl(_))));
        c.url = "ldaps://".into();
        assert!(matches!(c.check(), Err(ConfigError::BadUrl(_))));
    }

    #[test]
    fn settings_that_would_let_nobody_in_are_refused() {
        let mut c = config();
        c.user_filter = "(uid=alice)".into();
        assert_eq!(c.check(), Err(ConfigError::MissingPlaceholder("user_filter", "{login}")));
        let mut c = config();
        c.admin_groups.clear();
        c.technician_groups.clear();
        assert_eq!(c.check(), Err(ConfigError::NoGroups));
        let mut c = config();
        c.bind_dn = Some("cn=svc".into());
        assert_eq!(c.check(), Err(ConfigError::HalfBind));
    }

    #[test]
    fn the_highest_role_wins_and_dns_compare_loosely() {
        let c = config();
        let tech = "CN=GG-Parc-Techniciens,OU=Groupes,DC=hopital,DC=local".to_string();
        let admin = "cn=gg-parc-admins,ou=groupes,dc=hopital,dc=local".to_string();
        assert_eq!(c.role_for(std::slice::from_ref(&tech)), Some(Role::Technician));
        assert_eq!(c.role_for(&[tech, admin]), Some(Role::Admin));
        assert_eq!(c.role_for(&["cn=compta,dc=hopital,dc=local".into()]), None);
        assert_eq!(c.role_for(&[]), None);
    }

    #[test]
    fn logins_cannot_rewrite_the_filter() {
        assert_eq!(fill("(uid={login})", "{login}", "alice"), "(uid=alice)");
        assert_eq!(fill("(uid={login})", "{login}", "*)(uid=*"), "(uid=\\2a\\29\\28uid=\\2a)");
        assert_eq!(fill("(member={dn})", "{dn}", "cn=a\\,b,dc=x"), "(member=cn=a\\5c,b,dc=x)");
        assert!(valid_login("jdupont"));
        assert!(!valid_login(""));
        assert!(!valid_login("a\0b"));
        assert!(!valid_login(&"a".repeat(300)));
    }

    #[test]
    fn an_unreachable_directory_is_not_asked_again_at_once() {
        let b = Breaker::default();
        let t = Instant::now();
        assert_eq!(b.open_reason(t), None);
        b.trip(t, "connection refused");
        assert_eq!(b.open_reason(t + Duration::from_secs(1)).as_deref(), Some("connection refused"));
        assert_eq!(b.open_reason(t + RETRY_AFTER), None);
        b.trip(t, "x");
        b.reset();
        assert_eq!(b.open_reason(t), None);
    }
}
