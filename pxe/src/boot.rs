//! What to boot, as a pure function of who is asking (pixiecore's shape: one decision, idempotent,
//! tested as a table). Firmware asks several times during one boot (DISCOVER, REQUEST, the
//! port-4011 REQUEST, then iPXE again): every time the same answer.

use std::fmt;

/// Client system architecture, DHCP option 93 (RFC 4578 and IANA's "Processor Architecture
/// Types" registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// 0: x86 BIOS.
    BiosX86,
    /// 6: x86 UEFI (32-bit).
    EfiIa32,
    /// 7: x64 UEFI. RFC 4578 calls 7 "EFI BC", but x86-64 firmware (OVMF, most PCs) sends it.
    EfiX64,
    /// 9: x64 UEFI as RFC 4578 names it; some firmware sends this one.
    EfiX64Alt,
    /// 11: ARM 64-bit UEFI.
    EfiArm64,
    /// 16: x64 UEFI HTTP boot.
    EfiX64Http,
    /// 19: ARM 64-bit UEFI HTTP boot.
    EfiArm64Http,
    /// Anything else.
    Other(u16),
}

impl Arch {
    /// The architecture for an option 93 value.
    pub const fn from_code(code: u16) -> Self {
        match code {
            0 => Self::BiosX86,
            6 => Self::EfiIa32,
            7 => Self::EfiX64,
            9 => Self::EfiX64Alt,
            11 => Self::EfiArm64,
            16 => Self::EfiX64Http,
            19 => Self::EfiArm64Http,
            other => Self::Other(other),
        }
    }

    /// The option 93 value.
    pub const fn code(self) -> u16 {
        match self {
            Self::BiosX86 => 0,
            Self::EfiIa32 => 6,
            Self::EfiX64 => 7,
            Self::EfiX64Alt => 9,
            Self::EfiArm64 => 11,
            Self::EfiX64Http => 16,
            Self::EfiArm64Http => 19,
            Self::Other(c) => c,
        }
    }
}

/// Option 60 vendor class prefixes that mark a network-boot client.
pub mod vendor_class {
    /// PXE firmware and iPXE: `PXEClient:Arch:00007:UNDI:003000`.
    pub const PXE_CLIENT: &str = "PXEClient";
    /// UEFI HTTP boot: `HTTPClient:Arch:00016:UNDI:003001`.
    pub const HTTP_CLIENT: &str = "HTTPClient";
}

/// Option 77 user class that iPXE sends (as a raw string, not in RFC 3004 format).
pub const IPXE_USER_CLASS: &[u8] = b"iPXE";

/// What kind of network-boot client, from option 60.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorClass {
    /// `PXEClient…`.
    Pxe,
    /// `HTTPClient…`.
    Http,
    /// Anything else, or no option 60: not a network-boot client.
    Other,
}

impl VendorClass {
    /// Classifies an option 60 value.
    pub fn from_option(value: Option<&[u8]>) -> Self {
        match value {
            Some(v) if v.starts_with(vendor_class::PXE_CLIENT.as_bytes()) => Self::Pxe,
            Some(v) if v.starts_with(vendor_class::HTTP_CLIENT.as_bytes()) => Self::Http,
            _ => Self::Other,
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// Option 93; a PXE client that sends none is a BIOS one (PXE 2.1 predates the option).
    pub arch: Option<Arch>,
    /// Option 60.
    pub vendor: VendorClass,
    /// Option 77 says iPXE is already running.
    pub ipxe: bool,
}

/// The loader UEFI PXE clients get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UefiLoader {
    /// Debian's shim (signed by Microsoft's UEFI CA), then Debian's signed GRUB and kernel
    /// (see [`crate::grub`]): boots with Secure Boot on or off, so no PC's firmware settings
    /// need changing.
    #[default]
    Shim,
    /// `snponly.efi` (iPXE over the firmware's network driver): Secure Boot must be off.
    SnpOnly,
    /// `ipxe.efi`: iPXE's own drivers, for firmware whose SNP driver misbehaves; Secure Boot off.
    Ipxe,
}

impl UefiLoader {
    /// The TFTP name: `netboot/shimx64.efi` (built by `iso/build-netboot`), or the file name in
    /// Debian's `ipxe` package (`/usr/lib/ipxe`). Shim fetches `grubx64.efi` from the same
    /// directory.
    pub const fn file_name(self) -> &'static str {
        match self {
            Self::Shim => "netboot/shimx64.efi",
            Self::SnpOnly => "snponly.efi",
            Self::Ipxe => "ipxe.efi",
        }
    }

    /// The iPXE loader UEFI HTTP boot clients get: Debian's signed GRUB speaks no HTTP, so
    /// HTTP boot goes through iPXE (Secure Boot off) whatever the PXE loader is.
    pub const fn http_boot_file_name(self) -> &'static str {
        match self {
            Self::Ipxe => "ipxe.efi",
            Self::Shim | Self::SnpOnly => "snponly.efi",
        }
    }
}

/// The file name of the BIOS loader in Debian's `ipxe` package.
pub const BIOS_LOADER: &str = "undionly.kpxe";

/// Boot settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Base URL of parc's HTTP server, without a trailing slash: `http://10.77.0.1:8080`.
    /// iPXE fetches `<base>/boot.ipxe`; UEFI HTTP boot clients fetch the loader from
    /// `<base>/ipxe/<loader>`, so the HTTP server must serve the iPXE binaries there.
    pub http_base: String,
    /// UEFI loader served over TFTP (and HTTP for HTTP boot).
    pub uefi_loader: UefiLoader,
}

/// The boot decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// Fetch this file from parc's TFTP server.
    Tftp(String),
    /// Fetch this URL. `http_client` marks a UEFI HTTP boot client, which must see option 60
    /// `HTTPClient` in the reply.
    Http {
        /// The URL.
        url: String,
        /// The client is UEFI HTTP boot firmware, not iPXE.
        http_client: bool,
    },
}

impl Boot {
    /// The boot file name or URL, as sent in the BOOTP `file` field or option 67.
    pub fn file(&self) -> &str {
        match self {
            Boot::Tftp(f) => f,
            Boot::Http { url, .. } => url,
        }
    }

    /// The option 60 value the reply carries.
    pub fn vendor_class(&self) -> &'static str {
        match self {
            Boot::Http { http_client: true, .. } => vendor_class::HTTP_CLIENT,
            _ => vendor_class::PXE_CLIENT,
        }
    }
}

impl fmt::Display for Boot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file())
    }
}

/// Chooses what `client` boots; `None` for clients parc has nothing for (not network-boot
/// clients, or architectures without a loader).
pub fn choose(config: &Config, client: &Client) -> Option<Boot> {
    let base = config.http_base.trim_end_matches('/');
    // iPXE is already running: hand it the script, never the loader (that would chainload
    // iPXE into itself forever).
    if client.ipxe && client.vendor != VendorClass::Other {
        return Some(Boot::Http { url: format!("{base}/boot.ipxe"), http_client: false });
    }
    let arch = client.arch.unwrap_or(Arch::BiosX86);
    match (client.vendor, arch) {
        (VendorClass::Pxe, Arch::BiosX86) => Some(Boot::Tftp(BIOS_LOADER.to_owned())),
        (VendorClass::Pxe, Arch::EfiX64 | Arch::EfiX64Alt) => {
            Some(Boot::Tftp(config.uefi_loader.file_name().to_owned()))
        }
        (VendorClass::Http, Arch::EfiX64Http) => Some(Boot::Http {
            url: format!("{base}/ipxe/{}", config.uefi_loader.http_boot_file_name()),
            http_client: true,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_choice_table() {
        let cfg = Config { http_base: "http://10.77.0.1:8080/".into(), uefi_loader: UefiLoader::SnpOnly };
        let ipxe_cfg = Config { uefi_loader: UefiLoader::Ipxe, ..cfg.clone() };
        let shim_cfg = Config { uefi_loader: UefiLoader::Shim, ..cfg.clone() };
        let tftp = |f: &str| Some(Boot::Tftp(f.into()));
        let script = Some(Boot::Http { url: "http://10.77.0.1:8080/boot.ipxe".into(), http_client: false });
        let c = |arch: Option<u16>, vendor, ipxe| Client { arch: arch.map(Arch::from_code), vendor, ipxe };
        use VendorClass::*;
        let cases = [
            ("bios pxe rom", &cfg, c(Some(0), Pxe, false), tftp("undionly.kpxe")),
            ("old pxe rom without option 93", &cfg, c(None, Pxe, false), tftp("undionly.kpxe")),
            ("bios ipxe rom", &cfg, c(Some(0), Pxe, true), script.clone()),
            ("uefi x64 firmware (7)", &cfg, c(Some(7), Pxe, false), tftp("snponly.efi")),
            ("uefi x64 firmware (9)", &cfg, c(Some(9), Pxe, false), tftp("snponly.efi")),
            ("uefi firmware, ipxe.efi configured", &ipxe_cfg, c(Some(7), Pxe, false), tftp("ipxe.efi")),
            ("uefi firmware, shim (the default)", &shim_cfg, c(Some(7), Pxe, false), tftp("netboot/shimx64.efi")),
            ("uefi firmware (9), shim", &shim_cfg, c(Some(9), Pxe, false), tftp("netboot/shimx64.efi")),
            (
                "http client, shim configured: iPXE over HTTP",
                &shim_cfg,
                c(Some(16), Http, false),
                Some(Boot::Http { url: "http://10.77.0.1:8080/ipxe/snponly.efi".into(), http_client: true }),
            ),
            ("firmware ipxe (uefi second stage)", &cfg, c(Some(7), Pxe, true), script.clone()),
            (
                "http client",
                &cfg,
                c(Some(16), Http, false),
                Some(Boot::Http { url: "http://10.77.0.1:8080/ipxe/snponly.efi".into(), http_client: true }),
            ),
            ("http vendor class with a pxe arch", &cfg, c(Some(7), Http, false), None),
            ("uefi ia32: no loader", &cfg, c(Some(6), Pxe, false), None),
            ("uefi arm64: no loader", &cfg, c(Some(11), Pxe, false), None),
            ("unknown arch", &cfg, c(Some(0x29), Pxe, false), None),
            ("not a boot client", &cfg, c(Some(0), Other, false), None),
            ("booted linux that says iPXE but no PXEClient", &cfg, c(None, Other, true), None),
        ];
        for (name, cfg, client, want) in cases {
            assert_eq!(choose(cfg, &client), want, "{name}");
            // Idempotent: firmware asks several times.
            assert_eq!(choose(cfg, &client), choose(cfg, &client), "{name}");
        }
    }

    #[test]
    fn arch_codes_round_trip() {
        for code in 0..=64 {
            assert_eq!(Arch::from_code(code).code(), code);
        }
    }

    #[test]
    fn vendor_class_prefixes() {
        assert_eq!(VendorClass::from_option(Some(b"PXEClient:Arch:00007:UNDI:003000")), VendorClass::Pxe);
        assert_eq!(VendorClass::from_option(Some(b"HTTPClient:Arch:00016:UNDI:003001")), VendorClass::Http);
        assert_eq!(VendorClass::from_option(Some(b"PXELAB-client")), VendorClass::Other);
        assert_eq!(VendorClass::from_option(Some(b"PXEClien")), VendorClass::Other);
        assert_eq!(VendorClass::from_option(None), VendorClass::Other);
    }
}
