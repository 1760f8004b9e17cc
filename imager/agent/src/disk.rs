//! Which disk to write (pure): by serial or WWN when the inventory knows it, else the
//! department's rule. Never a USB or removable disk, never one smaller than the image.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Kernel name: `nvme0n1`, `sda`, `vda`.
    pub name: String,
    pub size_bytes: u64,
    /// nvme, sata, sas, virtio, scsi, usb, mmc, unknown.
    pub bus: String,
    pub removable: bool,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub model: Option<String>,
}

/// The department's rule, as the server sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRule {
    #[serde(default)]
    pub prefer: Vec<String>,
    #[serde(default)]
    pub choose: Option<String>,
    #[serde(default)]
    pub min_size: Option<u64>,
    /// On a disk larger than the image, the last partition takes the rest.
    #[serde(default = "yes")]
    pub grow: bool,
}

fn yes() -> bool {
    true
}

impl Default for DiskRule {
    fn default() -> DiskRule {
        DiskRule { prefer: Vec::new(), choose: None, min_size: None, grow: true }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub disk: DiskInfo,
    /// Shown on screen and sent to the server.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no disk can receive this image: {}", .rejected.join("; "))]
pub struct NoDisk {
    pub rejected: Vec<String>,
}

fn gb(n: u64) -> String {
    format!("{:.1} GB", n as f64 / 1e9)
}

/// `need` is the smallest disk the image fits on.
pub fn choose(disks: &[DiskInfo], rule: &DiskRule, need: u64, wanted_serial: Option<&str>) -> Result<Choice, NoDisk> {
    let mut rejected = Vec::new();
    let min = need.max(rule.min_size.unwrap_or(0));
    let mut eligible: Vec<&DiskInfo> = Vec::new();
    for d in disks {
        let why = if d.bus == "usb" {
            Some("USB disk".to_string())
        } else if d.removable {
            Some("removable".to_string())
        } else if d.size_bytes < min {
            Some(format!("{} is smaller than the {} needed", gb(d.size_bytes), gb(min)))
        } else {
            None
        };
        match why {
            Some(w) => rejected.push(format!("{} ({w})", d.name)),
            None => eligible.push(d),
        }
    }
    if let Some(serial) = wanted_serial.filter(|s| !s.is_empty()) {
        let hit = eligible.iter().find(|d| d.serial.as_deref() == Some(serial) || d.wwn.as_deref() == Some(serial));
        return match hit {
            Some(d) => {
                Ok(Choice { disk: (*d).clone(), reason: format!("{}: serial {serial} named by the inventory", d.name) })
            }
            None => {
                rejected.insert(0, format!("the inventory names disk {serial}, which is not here or not eligible"));
                Err(NoDisk { rejected })
            }
        };
    }
    let prefer: Vec<&str> = if rule.prefer.is_empty() {
        vec!["nvme", "sata", "sas", "virtio", "scsi"]
    } else {
        rule.prefer.iter().map(String::as_str).collect()
    };
    for bus in &prefer {
        let mut on_bus: Vec<&DiskInfo> = eligible.iter().copied().filter(|d| d.bus == *bus).collect();
        if on_bus.is_empty() {
            continue;
        }
        // Stable order: kernel names sort the way firmware enumerates (nvme0n1 < nvme1n1, sda < sdb).
        on_bus.sort_by(|a, b| a.name.cmp(&b.name));
        let how = rule.choose.as_deref().unwrap_or("first");
        let d = match how {
            "largest" => on_bus.iter().max_by_key(|d| d.size_bytes).copied(),
            "smallest" => on_bus.iter().min_by_key(|d| d.size_bytes).copied(),
            _ => on_bus.first().copied(),
        }
        .expect("non-empty");
        return Ok(Choice {
            disk: d.clone(),
            reason: format!(
                "{} ({}, {}): the {how} of {} eligible {bus} disk(s); the department prefers {}",
                d.name,
                gb(d.size_bytes),
                d.model.as_deref().unwrap_or("unknown model"),
                on_bus.len(),
                prefer.join(", ")
            ),
        });
    }
    for d in eligible {
        rejected.push(format!("{} (bus {} not in the department's list {})", d.name, d.bus, prefer.join(", ")));
    }
    if rejected.is_empty() {
        rejected.push("no disk found".into());
    }
    Err(NoDisk { rejected })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, gb: u64, bus: &str, removable: bool) -> DiskInfo {
        DiskInfo {
            name: name.into(),
            size_bytes: gb * 1_000_000_000,
            bus: bus.into(),
            removable,
            serial: Some(format!("SN-{name}")),
            wwn: None,
            model: None,
        }
    }

    #[test]
    fn choices() {
        let usb = disk("sdb", 2000, "usb", false);
        let sd = disk("sda", 500, "sata", false);
        let nv0 = disk("nvme0n1", 256, "nvme", false);
        let nv1 = disk("nvme1n1", 1000, "nvme", false);
        let card = disk("mmcblk0", 64, "mmc", true);
        let all = [usb.clone(), sd.clone(), nv1.clone(), nv0.clone(), card];
        let rule = DiskRule::default();
        // (what, rule, bytes needed, disk serial the task names, chosen disk or the reason's words)
        type Case<'a> = (&'a str, DiskRule, u64, Option<&'a str>, Result<&'a str, &'a str>);
        let cases: Vec<Case> = vec![
            ("first nvme by name", rule.clone(), 10_000_000_000, None, Ok("nvme0n1")),
            ("largest nvme", DiskRule { choose: Some("largest".into()), ..rule.clone() }, 1, None, Ok("nvme1n1")),
            (
                "sata preferred",
                DiskRule { prefer: vec!["sata".into(), "nvme".into()], ..rule.clone() },
                1,
                None,
                Ok("sda"),
            ),
            ("image too big for nvme0", rule.clone(), 300_000_000_000, None, Ok("nvme1n1")),
            ("inventory serial", rule.clone(), 1, Some("SN-sda"), Ok("sda")),
            ("serial of the USB disk refused", rule.clone(), 1, Some("SN-sdb"), Err("not here or not eligible")),
            ("nothing big enough", rule.clone(), 3_000_000_000_000, None, Err("smaller than")),
            (
                "only virtio allowed",
                DiskRule { prefer: vec!["virtio".into()], ..rule.clone() },
                1,
                None,
                Err("not in the department's list"),
            ),
        ];
        for (name, rule, need, serial, want) in cases {
            let got = choose(&all, &rule, need, serial);
            match (got, want) {
                (Ok(c), Ok(w)) => assert_eq!(c.disk.name, w, "{name}: {}", c.reason),
                (Err(e), Err(w)) => {
                    let msg = e.to_string();
                    assert!(msg.contains(w), "{name}: {msg}");
                    assert!(msg.contains("sdb (USB disk)") && msg.contains("mmcblk0 (removable)"), "{name}: {msg}");
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}
