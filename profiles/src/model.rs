//! The typed profiles: departments, disks, machines and their MAC addresses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hostname::HostnamePattern;

/// A network card's address: the key of a machine in the inventory.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Ord, PartialOrd, Debug)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The 12 hex digits, uppercase, without separators (`AABBCCDDEEFF`).
    pub fn hex_upper(&self) -> String {
        self.0.iter().map(|b| format!("{b:02X}")).collect()
    }
}

impl FromStr for Mac {
    type Err = String;

    /// `aa:bb:cc:dd:ee:ff`, `AA-BB-CC-DD-EE-FF` or `aabbccddeeff`, in any case.
    fn from_str(s: &str) -> Result<Mac, String> {
        let bad = || format!("'{s}' is not a MAC address (write it as aa:bb:cc:dd:ee:ff)");
        let digits: Vec<u8> = match s.len() {
            12 => s.bytes().collect(),
            17 => {
                let sep = s.as_bytes()[2];
                if sep != b':' && sep != b'-' {
                    return Err(bad());
                }
                let mut digits = Vec::with_capacity(12);
                for (i, b) in s.bytes().enumerate() {
                    match i % 3 {
                        2 if b != sep => return Err(bad()),
                        2 => {}
                        _ => digits.push(b),
                    }
                }
                digits
            }
            _ => return Err(bad()),
        };
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(bad());
        }
        let nibble = |b: u8| (b as char).to_digit(16).expect("checked hex digit") as u8;
        let mut mac = [0u8; 6];
        for (byte, pair) in mac.iter_mut().zip(digits.chunks(2)) {
            *byte = nibble(pair[0]) << 4 | nibble(pair[1]);
        }
        Ok(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Department ids and inventory department columns: `[a-z0-9-]+`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A disk bus a department allows for the system disk. USB and removable disks are never
/// eligible; the agent enforces that whatever the department says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    Nvme,
    Sata,
    Sas,
    Virtio,
    Scsi,
}

impl Bus {
    pub const ALL: [Bus; 5] = [Bus::Nvme, Bus::Sata, Bus::Sas, Bus::Virtio, Bus::Scsi];

    pub fn as_str(self) -> &'static str {
        match self {
            Bus::Nvme => "nvme",
            Bus::Sata => "sata",
            Bus::Sas => "sas",
            Bus::Virtio => "virtio",
            Bus::Scsi => "scsi",
        }
    }
}

/// Which disk to take among the disks of the first preferred bus that has any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Choose {
    First,
    Largest,
    Smallest,
}

/// How the agent picks the disk the image is written to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskRule {
    /// Buses allowed, in preference order.
    pub prefer: Vec<Bus>,
    pub choose: Choose,
    /// Disks smaller than this (bytes) are not eligible.
    pub min_size: Option<u64>,
    /// On a disk larger than the image, the last partition and its file system take the rest.
    pub grow: bool,
}

impl Default for DiskRule {
    fn default() -> DiskRule {
        DiskRule { prefer: vec![Bus::Nvme, Bus::Sata, Bus::Virtio], choose: Choose::First, min_size: None, grow: true }
    }
}

/// The system a department's image holds, which decides how the agent customises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Os {
    #[default]
    Linux,
    Windows,
}

impl Os {
    pub fn as_str(self) -> &'static str {
        match self {
            Os::Linux => "linux",
            Os::Windows => "windows",
        }
    }
}

/// `[windows]` of a department whose `os` is `"windows"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowsSettings {
    /// A Windows time zone id (`tzutil /l`), written to the answer file's specialize pass.
    pub time_zone: String,
    /// The directory OU where machines are joined offline; `None`: no domain join.
    pub domain_ou: Option<String>,
}

/// Time zone of a Windows department that names none: French hospitals.
pub const DEFAULT_TIME_ZONE: &str = "Romance Standard Time";

/// One department: `departments/<id>.toml`, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Department {
    /// The file stem: `[a-z0-9-]+`.
    pub id: String,
    pub name: String,
    pub description: String,
    /// `name`, `name@N` or `sha256:<64 hex>`; its existence in the store is checked by the server.
    pub image: String,
    /// 1-based line of the `image` key, for the server's "unknown image" problem.
    pub image_line: u32,
    pub hostname: HostnamePattern,
    pub tags: Vec<String>,
    pub disk: DiskRule,
    /// Directories of the repository copied onto the installed system's root.
    pub payloads: Vec<String>,
    /// Script of the repository run once on the installed system's first boot (a shell script
    /// on Linux, PowerShell on Windows).
    pub first_boot: Option<String>,
    pub os: Os,
    /// Present exactly when `os` is Windows.
    pub windows: Option<WindowsSettings>,
    /// `departments/<id>.toml`.
    pub file: String,
    /// True when the file at HEAD fails and this is its last good version.
    pub stale: bool,
}

/// What a path in the repository's tree must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
}

/// Whether a machine is in service. Retired machines keep their row (history) but free their hostname.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineStatus {
    #[default]
    Active,
    Retired,
}

impl MachineStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineStatus::Active => "active",
            MachineStatus::Retired => "retired",
        }
    }
}

/// One row of `inventory.csv`. Deserializes with only `mac` and `department` required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub mac: Mac,
    /// Empty until a name is assigned.
    #[serde(default)]
    pub hostname: String,
    pub department: String,
    #[serde(default)]
    pub serial: String,
    #[serde(default)]
    pub asset_tag: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub status: MachineStatus,
    #[serde(default)]
    pub notes: String,
    /// 1-based line in `inventory.csv` (set by the inventory; ignored by `upsert`).
    #[serde(default)]
    pub line: u32,
}

impl Machine {
    /// An active machine with only the required fields set.
    pub fn new(mac: Mac, hostname: &str, department: &str) -> Machine {
        Machine {
            mac,
            hostname: hostname.to_string(),
            department: department.to_string(),
            serial: String::new(),
            asset_tag: String::new(),
            location: String::new(),
            status: MachineStatus::Active,
            notes: String::new(),
            line: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_forms() {
        let want = Mac([0xaa, 0xbb, 0xcc, 0x0d, 0xee, 0xff]);
        for s in ["aa:bb:cc:0d:ee:ff", "AA-BB-CC-0D-EE-FF", "aabbcc0deeff", "Aa:bB:cc:0D:ee:FF"] {
            assert_eq!(s.parse::<Mac>(), Ok(want), "{s}");
        }
        assert_eq!(want.to_string(), "aa:bb:cc:0d:ee:ff");
        assert_eq!(want.hex_upper(), "AABBCC0DEEFF");
        for s in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb-cc:dd:ee:ff",
            "aa:bb:cc:dd:ee:fg",
            "+a:bb:cc:dd:ee:ff",
            "aabbccddeef+",
            "é:bb:cc:dd:ee:f",
        ] {
            assert!(s.parse::<Mac>().is_err(), "{s}");
        }
    }

    #[test]
    fn mac_serde_is_the_display_string() {
        let mac: Mac = "01-02-03-04-05-0A".parse().unwrap();
        assert_eq!(serde_json::to_string(&mac).unwrap(), r#""01:02:03:04:05:0a""#);
        assert_eq!(serde_json::from_str::<Mac>(r#""01020304050a""#).unwrap(), mac);
        assert!(serde_json::from_str::<Mac>(r#""nope""#).is_err());
    }

    #[test]
    fn machine_json() {
        let m: Machine = serde_json::from_str(r#"{"mac": "52:54:00:00:00:01", "department": "urgences"}"#).unwrap();
        assert_eq!(m, Machine::new(Mac([0x52, 0x54, 0, 0, 0, 1]), "", "urgences"));
        let json = serde_json::to_string(&Machine { status: MachineStatus::Retired, ..m }).unwrap();
        assert!(json.contains(r#""mac":"52:54:00:00:00:01""#) && json.contains(r#""status":"retired""#), "{json}");
    }
}
