//! What the boot script told the agent, on the kernel command line (pure).

/// `parc.server=http://10.0.0.1:8080 parc.mac=52:54:00:12:34:56 parc.mode=task parc.token=…`
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootArgs {
    pub server: String,
    pub mac: String,
    /// `task` (a token follows) or `register`.
    pub mode: String,
    pub token: Option<String>,
    /// `parc.reboot=0`: stay on the final screen instead of rebooting (debugging).
    pub no_reboot: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the kernel command line has no {0}=: this machine was not booted by parc's boot script")]
pub struct Missing(pub &'static str);

pub fn parse(cmdline: &str) -> Result<BootArgs, Missing> {
    let mut a = BootArgs::default();
    for word in cmdline.split_ascii_whitespace() {
        let Some((k, v)) = word.split_once('=') else { continue };
        match k {
            "parc.server" => a.server = v.trim_end_matches('/').to_string(),
            "parc.mac" => a.mac = v.to_ascii_lowercase(),
            "parc.mode" => a.mode = v.to_string(),
            "parc.token" if !v.is_empty() => a.token = Some(v.to_string()),
            "parc.reboot" => a.no_reboot = v == "0",
            _ => {}
        }
    }
    if a.server.is_empty() {
        return Err(Missing("parc.server"));
    }
    if a.mac.is_empty() {
        return Err(Missing("parc.mac"));
    }
    if a.mode.is_empty() {
        a.mode = if a.token.is_some() { "task".into() } else { "register".into() };
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_boot_script_writes() {
        let a = parse("initrd=initrd parc.server=http://10.77.0.1:8080/ parc.mac=52:54:00:AB:00:01 parc.mode=task parc.token=pt_abc console=ttyS0,115200 quiet").unwrap();
        assert_eq!(a.server, "http://10.77.0.1:8080");
        assert_eq!(a.mac, "52:54:00:ab:00:01");
        assert_eq!(a.mode, "task");
        assert_eq!(a.token.as_deref(), Some("pt_abc"));
        assert!(!a.no_reboot);
        let r = parse("parc.server=http://s parc.mac=52:54:00:00:00:01 parc.reboot=0").unwrap();
        assert_eq!((r.mode.as_str(), r.token, r.no_reboot), ("register", None, true));
        assert_eq!(parse("quiet parc.mac=x").unwrap_err(), Missing("parc.server"));
    }
}
