//! What the machine is: SMBIOS identity, memory and disks, read from sysfs and procfs under a
//! root directory (`/` on a machine, a fixture tree in tests).

use std::path::Path;

use serde::Serialize;

use crate::disk::DiskInfo;

#[derive(Debug, Clone, Serialize)]
pub struct Hardware {
    pub mac: String,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub model: Option<String>,
    pub memory_bytes: u64,
    pub disks: Vec<DiskInfo>,
    pub firmware: Firmware,
}

/// How the machine booted: UEFI or legacy BIOS, and UEFI's Secure Boot state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Firmware {
    pub uefi: bool,
    /// `None`: UEFI, but its variables could not be read (efivarfs not mounted).
    pub secure_boot: Option<bool>,
}

/// The global variable GUID UEFI's `SecureBoot` variable lives under.
const SECURE_BOOT_VAR: &str = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// `/sys/firmware/efi` exists on a UEFI boot; efivarfs shows each variable as 4 bytes of
/// attributes then its value (`SecureBoot`: one byte, 1 = on). A firmware without the variable
/// does not enforce Secure Boot.
pub fn firmware(root: &Path) -> Firmware {
    let efi = root.join("sys/firmware/efi");
    if !efi.is_dir() {
        return Firmware { uefi: false, secure_boot: None };
    }
    let vars = efi.join("efivars");
    let mounted = std::fs::read_dir(&vars).is_ok_and(|mut d| d.next().is_some());
    let secure_boot = match std::fs::read(vars.join(SECURE_BOOT_VAR)) {
        Ok(v) => v.get(4).map(|&b| b == 1),
        Err(_) if mounted => Some(false),
        Err(_) => None,
    };
    Firmware { uefi: true, secure_boot }
}

fn read_trim(p: &Path) -> Option<String> {
    let s = std::fs::read_to_string(p).ok()?;
    let s = s.trim().trim_matches('\0').trim();
    // Firmware placeholders are no identity.
    let placeholder = ["", "To Be Filled By O.E.M.", "Default string", "System Serial Number", "Not Specified", "0"];
    (!placeholder.contains(&s)).then(|| s.to_string())
}

pub fn probe(root: &Path, mac: &str) -> Hardware {
    let dmi = root.join("sys/class/dmi/id");
    let model = match (read_trim(&dmi.join("sys_vendor")), read_trim(&dmi.join("product_name"))) {
        (Some(v), Some(p)) if !p.starts_with(&v) => Some(format!("{v} {p}")),
        (_, Some(p)) => Some(p),
        (v, None) => v,
    };
    let memory_bytes = std::fs::read_to_string(root.join("proc/meminfo"))
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    Hardware {
        mac: mac.to_string(),
        serial: read_trim(&dmi.join("product_serial")),
        uuid: read_trim(&dmi.join("product_uuid")).map(|u| u.to_lowercase()),
        model,
        memory_bytes,
        disks: disks(root),
        firmware: firmware(root),
    }
}

/// Whole disks that could be written: not partitions, loops, RAM disks, CD-ROMs or
/// device-mapper volumes.
pub fn disks(root: &Path) -> Vec<DiskInfo> {
    let block = root.join("sys/block");
    let Ok(entries) = std::fs::read_dir(&block) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if ["loop", "ram", "zram", "sr", "dm-", "md", "nbd", "fd"].iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let dir = block.join(&name);
        let sectors: u64 = read_trim(&dir.join("size")).and_then(|s| s.parse().ok()).unwrap_or(0);
        if sectors == 0 {
            continue;
        }
        // Where the device hangs in the device tree tells its bus (…/usb1/…, …/ata1/…).
        let link = std::fs::read_link(&dir).map(|l| l.to_string_lossy().to_string()).unwrap_or_default();
        let bus = if name.starts_with("nvme") {
            "nvme"
        } else if name.starts_with("vd") {
            "virtio"
        } else if name.starts_with("mmcblk") {
            "mmc"
        } else if link.contains("/usb") {
            "usb"
        } else if link.contains("/ata") {
            "sata"
        } else if link.contains("/virtio") {
            "virtio"
        } else if name.starts_with("sd") {
            "scsi"
        } else {
            "unknown"
        };
        out.push(DiskInfo {
            size_bytes: sectors * 512,
            bus: bus.to_string(),
            removable: read_trim(&dir.join("removable")).as_deref() == Some("1"),
            serial: read_trim(&dir.join("device/serial")).or_else(|| read_trim(&dir.join("serial"))),
            wwn: read_trim(&dir.join("wwid")).or_else(|| read_trim(&dir.join("device/wwid"))),
            model: read_trim(&dir.join("device/model")),
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_sysfs_tree() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let w = |p: &str, s: &str| {
            let p = r.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        w("sys/class/dmi/id/sys_vendor", "HP\n");
        w("sys/class/dmi/id/product_name", "HP EliteDesk 800 G6\n");
        w("sys/class/dmi/id/product_serial", "CZC1234XYZ\n");
        w("sys/class/dmi/id/product_uuid", "4C4C4544-0042\n");
        w("proc/meminfo", "MemTotal:        8048000 kB\nMemFree: 1 kB\n");
        w("sys/block/nvme0n1/size", "500118192\n");
        w("sys/block/nvme0n1/removable", "0\n");
        w("sys/block/nvme0n1/device/serial", "S4EWNX0R  \n");
        w("sys/block/nvme0n1/device/model", "Samsung SSD 980\n");
        w("sys/block/loop0/size", "100\n");
        w("sys/block/sr0/size", "100\n");
        w("sys/block/vda/size", "2048\n");
        let h = probe(r, "52:54:00:00:00:01");
        assert_eq!(h.model.as_deref(), Some("HP EliteDesk 800 G6"));
        assert_eq!(h.serial.as_deref(), Some("CZC1234XYZ"));
        assert_eq!(h.uuid.as_deref(), Some("4c4c4544-0042"));
        assert_eq!(h.memory_bytes, 8048000 * 1024);
        let names: Vec<&str> = h.disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["nvme0n1", "vda"]);
        assert_eq!(h.disks[0].serial.as_deref(), Some("S4EWNX0R"));
        assert_eq!((h.disks[0].bus.as_str(), h.disks[1].bus.as_str()), ("nvme", "virtio"));
        assert_eq!(h.disks[0].size_bytes, 500118192 * 512);
        assert_eq!(h.firmware, Firmware { uefi: false, secure_boot: None }, "no /sys/firmware/efi: BIOS");
        std::fs::create_dir_all(r.join("sys/firmware/efi/efivars")).unwrap();
        assert_eq!(firmware(r), Firmware { uefi: true, secure_boot: None }, "efivarfs not mounted: unknown");
        w("sys/firmware/efi/efivars/BootOrder-8be4df61-93ca-11d2-aa0d-00e098032b8c", "\x07\0\0\0\0\0");
        assert_eq!(firmware(r), Firmware { uefi: true, secure_boot: Some(false) }, "no SecureBoot variable: off");
        std::fs::write(r.join("sys/firmware/efi/efivars").join(SECURE_BOOT_VAR), [6, 0, 0, 0, 1]).unwrap();
        assert_eq!(firmware(r), Firmware { uefi: true, secure_boot: Some(true) });
        std::fs::write(r.join("sys/firmware/efi/efivars").join(SECURE_BOOT_VAR), [6, 0, 0, 0, 0]).unwrap();
        assert_eq!(firmware(r), Firmware { uefi: true, secure_boot: Some(false) });
    }
}
