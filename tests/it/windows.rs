//! Windows system partitions: what a capture leaves out (pagefile, hibernation and swap files),
//! what its pre-flight gate refuses (hibernated, Fast Startup, journal not closed, not
//! generalized), on NTFS volumes made by mkntfs and filled through ntfs-3g.

use std::path::Path;

use crate::support::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

const GENERALIZED: &str = "[State]\r\nImageState=IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE\r\n";

/// A 160 MiB NTFS volume (4 KiB clusters) laid out like a Windows system partition, inside a
/// GPT disk image at 1 MiB. `state_ini` is written UTF-16LE with its byte-order mark, as
/// Windows tools do; `None` leaves it out.
fn windows_disk(d: &Path, name: &str, hiberfil_head: &str, state_ini: Option<&str>) -> std::path::PathBuf {
    let vol = d.join(format!("{name}.vol"));
    let mnt = d.join(format!("{name}.mnt"));
    std::fs::create_dir_all(&mnt).unwrap();
    sh(&format!("truncate -s 160M {v} && mkntfs -F -Q -c 4096 -L Windows {v} >/dev/null", v = s(&vol)));
    let state = match state_ini {
        Some(text) => {
            let wide: Vec<u8> =
                [0xFF, 0xFE].into_iter().chain(text.encode_utf16().flat_map(u16::to_le_bytes)).collect();
            let f = d.join(format!("{name}.state.ini"));
            std::fs::write(&f, wide).unwrap();
            format!("mkdir -p {m}/Windows/Setup/State && cp {} {m}/Windows/Setup/State/State.ini", s(&f), m = s(&mnt))
        }
        None => "true".into(),
    };
    // The scratch files hold random bytes, as on a machine that ran: only their clusters'
    // existence matters to Windows.
    sh(&format!(
        "ntfs-3g {v} {m} && mkdir -p {m}/Windows/System32/config {m}/Users/Public \
         && for i in $(seq 1 50); do head -c $((i * 997)) /dev/urandom > {m}/Windows/System32/lib$i.dll; done \
         && head -c 3000000 /dev/urandom > {m}/Users/Public/dossier.pdf \
         && head -c 64M /dev/urandom > {m}/pagefile.sys && head -c 8M /dev/urandom > {m}/swapfile.sys \
         && (printf '{hiberfil_head}'; head -c 16M /dev/urandom) > {m}/hiberfil.sys && {state} \
         && cd {m} && find . -type f ! -name '*.sys' | sort | xargs sha256sum > {v}.sums; cd / ; umount {m}",
        v = s(&vol),
        m = s(&mnt),
    ));
    let disk = d.join(format!("{name}.img"));
    sh(&format!(
        "truncate -s 162M {k} && sgdisk -n 1:2048:+160M -t 1:0700 {k} >/dev/null && dd if={v} of={k} bs=1M seek=1 conv=notrunc status=none",
        k = s(&disk),
        v = s(&vol)
    ));
    disk
}

/// Byte offset, in the disk image, of the first cluster of `$LogFile` (MFT record 2's first run).
fn logfile_offset(disk: &[u8]) -> usize {
    let part = 1usize << 20;
    let le = |b: &[u8]| b.iter().rev().fold(0u64, |a, &x| a << 8 | x as u64);
    let mft = le(&disk[part + 0x30..part + 0x38]) as usize * 4096;
    let rec = part + mft + 2 * 1024;
    let mut at = rec + le(&disk[rec + 20..rec + 22]) as usize;
    while le(&disk[at..at + 4]) != 0x80 {
        at += le(&disk[at + 4..at + 8]) as usize;
    }
    let pairs = at + le(&disk[at + 32..at + 34]) as usize;
    let (ln, dn) = ((disk[pairs] & 0xF) as usize, (disk[pairs] >> 4) as usize);
    let lcn = le(&disk[pairs + 1 + ln..pairs + 1 + ln + dn]);
    part + lcn as usize * 4096
}

/// A restart page of version `major.minor` with its update sequence array, clients in use.
fn restart_page(major: u16, minor: u16) -> Vec<u8> {
    let mut p = vec![0u8; 4096];
    p[0..4].copy_from_slice(b"RSTR");
    p[4..6].copy_from_slice(&30u16.to_le_bytes());
    p[6..8].copy_from_slice(&9u16.to_le_bytes());
    p[16..20].copy_from_slice(&4096u32.to_le_bytes());
    p[20..24].copy_from_slice(&4096u32.to_le_bytes());
    p[24..26].copy_from_slice(&64u16.to_le_bytes());
    p[26..28].copy_from_slice(&minor.to_le_bytes());
    p[28..30].copy_from_slice(&major.to_le_bytes());
    p[64..72].copy_from_slice(&77u64.to_le_bytes());
    p[30..32].copy_from_slice(&[3, 0]);
    for i in 0..8 {
        let end = (i + 1) * 512 - 2;
        p[end..end + 2].copy_from_slice(&[3, 0]);
    }
    p
}

fn capture_out(disk: &Path, store: &Path, name: &str, extra: &[&str]) -> (bool, serde_json::Value, String) {
    let mut args = vec!["image", "capture", s(disk), "--store", s(store), "--name", name, "--json"];
    args.extend_from_slice(extra);
    let out = parc_run(&args);
    let json = String::from_utf8_lossy(&out.stdout).lines().last().and_then(|l| serde_json::from_str(l).ok());
    let json = json.or_else(|| serde_json::from_slice(&out.stdout).ok()).unwrap_or(serde_json::Value::Null);
    (out.status.success(), json, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn scratch_files_are_left_out_and_unfit_windows_states_are_refused() {
    if !have("mkntfs", "ntfs-3g") || !have("ntfscat", "ntfs-3g") || !root_or_skip("windows") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = d.join("store");

    // 1. A generalized system with 88 MiB of scratch files: none of it is stored but the first
    //    64 KiB of each, defined as zeros.
    let disk = windows_disk(d, "win", "wake", Some(GENERALIZED));
    let (ok, c, err) = capture_out(&disk, &store, "win", &[]);
    assert!(ok, "{err}\n{c:#}");
    let p = &c["partitions"][0];
    assert_eq!((p["fs"].as_str(), p["map"].as_str()), (Some("ntfs"), Some("allocation")), "{c:#}");
    let skipped: Vec<(String, u64, u64)> = p["skipped"]
        .as_array()
        .unwrap_or_else(|| panic!("no skipped files: {c:#}"))
        .iter()
        .map(|k| (k["name"].as_str().unwrap().to_string(), k["bytes"].as_u64().unwrap(), k["zeroed"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("pagefile.sys".to_string(), (64 << 20) - (64 << 10), 64 << 10),
            ("hiberfil.sys".to_string(), (16 << 20) + 4 - (64 << 10) + 4092, 64 << 10),
            ("swapfile.sys".to_string(), (8 << 20) - (64 << 10), 64 << 10),
        ],
        "{c:#}"
    );
    let used = p["used_bytes"].as_u64().unwrap();
    assert!(used < 20 << 20, "{used} bytes used: the scratch files were stored: {c:#}");
    assert!(c["findings"].as_array().is_none_or(|f| f.is_empty()), "{c:#}");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store.join("manifests").join(format!("{}.json", c["digest"].as_str().unwrap()))).unwrap(),
    )
    .unwrap();
    let zeros: u64 =
        manifest["partitions"][0]["zeros"].as_array().unwrap().iter().map(|z| z[1].as_u64().unwrap()).sum();
    assert_eq!(zeros, 3 * (64 << 10), "the scratch files' heads are defined as zeros: {manifest:#}");

    // 2. Deployed over a disk holding another system's bytes (every byte 0xA5, as if a stale
    //    hibernation image were there): files identical, the scratch files' heads zero.
    let target = d.join("target.img");
    sh(&format!("head -c 162M /dev/zero | tr '\\000' '\\245' > {}", s(&target)));
    let out = parc_run(&["image", "deploy", "win", "--store", s(&store), "--to", s(&target), "--verify", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let vol = d.join("deployed.vol");
    sh(&format!("dd if={} of={} bs=1M skip=1 count=160 status=none", s(&target), s(&vol)));
    let fix = std::process::Command::new("ntfsfix").args(["-n", s(&vol)]).output().unwrap();
    assert!(fix.status.success(), "ntfsfix -n: {}", String::from_utf8_lossy(&fix.stdout));
    for f in ["pagefile.sys", "hiberfil.sys", "swapfile.sys"] {
        let out = d.join(f);
        sh(&format!("ntfscat {} {f} > {}", s(&vol), s(&out)));
        let head = sh(&format!("head -c 65536 {} | tr -d '\\000' | wc -c", s(&out)));
        assert_eq!(head.trim(), "0", "{f}: its first 64 KiB are not zeros after deploy");
    }
    let mnt = d.join("check.mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let after = sh(&format!(
        "ntfs-3g -o ro {v} {m} && cd {m} && find . -type f ! -name '*.sys' | sort | xargs sha256sum; cd /; umount {m}",
        v = s(&vol),
        m = s(&mnt)
    ));
    let before = std::fs::read_to_string(d.join("win.vol.sums")).unwrap();
    assert!(before.lines().count() > 50);
    assert_eq!(before, after, "files differ after deploy over a used disk");

    // 3. The gate, each refusal before anything is stored and naming what to do.
    let hibernated = windows_disk(d, "hib", "HIBR", Some(GENERALIZED));
    let complete = windows_disk(d, "complete", "wake", Some("[State]\r\nImageState=IMAGE_STATE_COMPLETE\r\n"));
    let unknown = windows_disk(d, "unknown", "wake", None);
    let mut cached = std::fs::read(&disk).unwrap();
    let at = logfile_offset(&cached);
    cached[at..at + 4096].copy_from_slice(&restart_page(2, 0));
    cached[at + 4096..at + 8192].copy_from_slice(&restart_page(2, 0));
    let fast_startup = d.join("fast-startup.img");
    std::fs::write(&fast_startup, &cached).unwrap();
    let mut crashed = std::fs::read(&disk).unwrap();
    crashed[at..at + 4096].copy_from_slice(&restart_page(1, 1));
    crashed[at + 4096..at + 8192].copy_from_slice(&restart_page(1, 1));
    let power_cut = d.join("power-cut.img");
    std::fs::write(&power_cut, &crashed).unwrap();
    let gated = d.join("store-gated");
    for (label, image, check, says) in [
        ("hibernated", &hibernated, "hibernated", "powercfg /h off"),
        ("fast-startup", &fast_startup, "journal", "Fast Startup"),
        ("power-cut", &power_cut, "journal", "replays the journal"),
        ("complete", &complete, "sysprep", "sysprep.exe /generalize"),
        ("unknown", &unknown, "sysprep", "State.ini is missing"),
    ] {
        let (ok, j, err) = capture_out(image, &gated, label, &[]);
        assert!(!ok, "{label}: captured");
        assert!(err.contains("refused before anything was stored") && err.contains(says), "{label}: {err}");
        assert!(err.contains("partition") && err.contains("verdict"), "{label}: no table: {err}");
        let f = j["findings"].as_array().unwrap_or_else(|| panic!("{label}: no findings in JSON: {j}"));
        assert!(f.iter().any(|x| x["check"] == check && x["severity"] == "refuse"), "{label}: {j}");
        let ls = parc_run(&["image", "ls", "--store", s(&gated)]);
        assert!(!String::from_utf8_lossy(&ls.stdout).contains(label), "{label}: an image was stored");
    }
    // A single machine's backup may be taken anyway, with the warning in the report.
    let (ok, c, err) = capture_out(&complete, &gated, "backup", &["--allow-not-generalized"]);
    assert!(ok, "{err}");
    let f = c["findings"].as_array().unwrap();
    assert!(f.iter().any(|x| x["check"] == "sysprep" && x["severity"] == "warn"), "{c:#}");
}

/// The answer file a sysprepped reference machine leaves: specialize already marked processed,
/// an oobeSystem pass parc must keep.
const IMAGE_UNATTEND: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<unattend xmlns="urn:schemas-microsoft-com:unattend" xmlns:wcm="http://schemas.microsoft.com/WMIConfig/2002/State">
    <settings pass="specialize" wcm:wasPassProcessed="true">
        <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
            <ComputerName>REFERENCE-PC</ComputerName>
            <RegisteredOrganization>CHU Exemple</RegisteredOrganization>
        </component>
    </settings>
    <settings pass="oobeSystem">
        <component name="Microsoft-Windows-International-Core" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
            <UILanguage>fr-FR</UILanguage>
        </component>
    </settings>
</unattend>
"#;

const IMAGE_SETUPCOMPLETE: &str =
    "@echo off\r\nrem installed by the reference build\r\ncall C:\\Tools\\inventory.cmd\r\nexit /b 0\r\n";

/// A disk laid out as Windows 10/11 installs itself on a UEFI PC: GPT with an ESP holding
/// `EFI/Microsoft/Boot/`, an MSR, and the NTFS system partition (generalized by sysprep, an
/// answer file and a SetupComplete.cmd to merge, a 64 MiB pagefile). Returns the disk and the
/// system partition's start and length.
pub fn windows_layout_disk(d: &Path, name: &str) -> (std::path::PathBuf, u64, u64) {
    const MIB: u64 = 1 << 20;
    let (esp, sys) = (MIB..65 * MIB, 81 * MIB..281 * MIB);
    let disk = d.join(format!("{name}.img"));
    sh(&format!(
        "truncate -s 282M {k} && sgdisk -n 1:2048:+64M -t 1:EF00 -c 1:EFI -n 2:0:+16M -t 2:0C01 -c 2:MSR \
         -n 3:0:+200M -t 3:0700 -c 3:Windows {k} >/dev/null",
        k = s(&disk)
    ));
    let fat = d.join(format!("{name}.esp"));
    let boot = d.join(format!("{name}.bootmgfw.efi"));
    std::fs::write(&boot, random_bytes(13, 1_500_000)).unwrap();
    sh(&format!(
        "truncate -s 64M {f} && mkfs.vfat -F 32 -n SYSTEM {f} >/dev/null && mmd -i {f} ::EFI ::EFI/Microsoft ::EFI/Microsoft/Boot ::EFI/Boot \
         && mcopy -i {f} {b} ::EFI/Microsoft/Boot/bootmgfw.efi && mcopy -i {f} {b} ::EFI/Boot/bootx64.efi \
         && dd if={f} of={k} bs=1M seek={} conv=notrunc status=none",
        esp.start / MIB,
        f = s(&fat),
        b = s(&boot),
        k = s(&disk)
    ));
    let vol = d.join(format!("{name}.ntfs"));
    let mnt = d.join(format!("{name}.ntfs.mnt"));
    std::fs::create_dir_all(&mnt).unwrap();
    let (ua, sc) = (d.join(format!("{name}.unattend.xml")), d.join(format!("{name}.SetupComplete.cmd")));
    std::fs::write(&ua, IMAGE_UNATTEND).unwrap();
    std::fs::write(&sc, IMAGE_SETUPCOMPLETE).unwrap();
    sh(&format!(
        "truncate -s 200M {v} && mkntfs -F -Q -c 4096 -L Windows {v} >/dev/null && ntfs-3g {v} {m} \
         && mkdir -p {m}/Windows/System32/config {m}/Windows/Panther {m}/Windows/Setup/Scripts {m}/Windows/Setup/State {m}/Users/Public {m}/Tools \
         && for i in $(seq 1 40); do head -c $((i * 1499)) /dev/urandom > {m}/Windows/System32/lib$i.dll; done \
         && head -c 2000000 /dev/urandom > {m}/Windows/System32/config/SYSTEM \
         && printf '[State]\\r\\nImageState=IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE\\r\\n' > {m}/Windows/Setup/State/State.ini \
         && cp {ua} {m}/Windows/Panther/unattend.xml && cp {sc} {m}/Windows/Setup/Scripts/SetupComplete.cmd \
         && echo inventory > {m}/Tools/inventory.cmd && head -c 64M /dev/urandom > {m}/pagefile.sys \
         && umount {m} && dd if={v} of={k} bs=1M seek={} conv=notrunc status=none",
        sys.start / MIB,
        v = s(&vol),
        m = s(&mnt),
        ua = s(&ua),
        sc = s(&sc),
        k = s(&disk)
    ));
    (disk, sys.start, sys.end - sys.start)
}

/// Every file of an NTFS volume image with its sha256, through a read-only ntfs-3g mount.
pub fn ntfs_sums(vol: &Path, mnt: &Path) -> String {
    std::fs::create_dir_all(mnt).unwrap();
    sh(&format!(
        "ntfs-3g -o ro {v} {m} && cd {m} && find . -type f | sort | xargs -d '\\n' sha256sum; cd /; umount {m}",
        v = s(vol),
        m = s(mnt)
    ))
}

/// A Windows department: its system, payload and PowerShell first-boot script committed to the
/// appliance's profiles repository, which then reloads.
fn windows_department(a: &crate::api::Appliance, extra: &str) {
    commit_windows_department(&a.data.join("profiles"), extra);
    let (s, st) = a.admin.post("/api/v1/profiles/reload", serde_json::json!({}));
    assert_eq!(s, 200, "{st}");
    assert!(st["problems"].as_array().is_none_or(|p| p.is_empty()), "{st}");
}

/// `departments/bloc.toml` (Windows, hostnames BLC-nnnn, a payload and a first-boot script) and
/// `departments/salle.toml` (the same image, `os` forgotten), committed to `repo`.
pub fn commit_windows_department(repo: &Path, extra: &str) {
    std::fs::create_dir_all(repo.join("payloads/bloc/Outils")).unwrap();
    std::fs::write(repo.join("payloads/bloc/Outils/lisez-moi.txt"), "Poste du bloc opératoire\r\n").unwrap();
    std::fs::create_dir_all(repo.join("scripts")).unwrap();
    std::fs::write(repo.join("scripts/bloc-firstboot.ps1"), "Write-Output 'bloc: premier démarrage'\r\n").unwrap();
    std::fs::write(
        repo.join("departments/bloc.toml"),
        format!(
            "name = \"Bloc opératoire\"\nimage = \"win11-poste\"\nhostname = \"BLC-{{counter:4}}\"\nos = \"windows\"\n\n\
             [software]\npayloads = [\"payloads/bloc\"]\nfirst_boot = \"scripts/bloc-firstboot.ps1\"\n{extra}"
        ),
    )
    .unwrap();
    // The same image named by a department that forgot `os = "windows"`.
    std::fs::write(
        repo.join("departments/salle.toml"),
        "name = \"Salle de réveil\"\nimage = \"win11-poste\"\nhostname = \"SAL-{counter:4}\"\n",
    )
    .unwrap();
    crate::api::git(repo, "add -A");
    crate::api::git(repo, "commit -q -m 'bloc: Windows department'");
}

/// What the agent made of a Windows-layout disk, checked from outside: the system partition at
/// `(start, len)` clean for `ntfsfix -n`, every file as `before` (the image's sums) but parc's,
/// the merged answer file naming `hostname`, SetupComplete.cmd calling parc's first boot before
/// the image's `exit`, the payload. Returns `C:\parc\agent.json`.
pub fn check_windows_disk(
    d: &Path,
    target: &Path,
    (start, len): (u64, u64),
    hostname: &str,
    before: &str,
) -> serde_json::Value {
    // The partition as the target's table says: on a larger disk the agent grew it.
    let (at, grown) = gpt_partition(target, 3);
    assert!(
        at == start && grown >= len,
        "system partition at {at}, {grown} bytes: the image's is at {start}, {len} bytes"
    );
    let dev = ReadOnlyLoop::new(target, start, grown);
    let out = Path::new(&dev.0);
    let fix = std::process::Command::new("ntfsfix").args(["-n", s(out)]).output().unwrap();
    assert!(fix.status.success(), "ntfsfix -n: {}", String::from_utf8_lossy(&fix.stdout));
    let after = ntfs_sums(out, &d.join(format!("{hostname}.after.mnt")));
    let ours = |l: &&str| {
        l.contains("./parc/")
            || l.ends_with("./Windows/Panther/unattend.xml")
            || l.ends_with("./Windows/Setup/Scripts/SetupComplete.cmd")
            || l.ends_with("./pagefile.sys")
    };
    let strip = |t: &str| t.lines().filter(|l| !ours(l)).map(str::to_string).collect::<Vec<_>>();
    assert!(strip(before).len() > 40);
    assert_eq!(strip(before), strip(&after), "files other than parc's changed");
    let cat = |path: &str| sh(&format!("ntfscat --force {} '{path}'", s(out)));
    let unattend = cat("Windows/Panther/unattend.xml");
    assert!(unattend.contains(&format!("<ComputerName>{hostname}</ComputerName>")), "{unattend}");
    assert!(unattend.contains("<TimeZone>Romance Standard Time</TimeZone>"), "{unattend}");
    assert!(unattend.contains("<RegisteredOrganization>CHU Exemple</RegisteredOrganization>"), "{unattend}");
    assert!(unattend.contains("<UILanguage>fr-FR</UILanguage>"), "the oobeSystem pass was lost: {unattend}");
    assert!(!unattend.contains("wasPassProcessed"), "Setup would skip the specialize pass: {unattend}");
    assert!(!unattend.contains("REFERENCE-PC"));
    let setup = cat("Windows/Setup/Scripts/SetupComplete.cmd");
    let call = setup.find("call \"%SystemDrive%\\parc\\firstboot.cmd\"").unwrap_or_else(|| panic!("{setup}"));
    assert!(setup.contains("call C:\\Tools\\inventory.cmd") && call < setup.find("exit /b 0").unwrap(), "{setup}");
    assert_eq!(cat("parc/Outils/lisez-moi.txt"), "Poste du bloc opératoire\r\n");
    assert!(cat("parc/first-boot.ps1").contains("premier démarrage"));
    assert!(cat("parc/firstboot.cmd").contains("report-first-boot.ps1"));
    serde_json::from_str(&cat("parc/agent.json")).unwrap()
}

#[test]
fn the_agent_names_a_windows_system_merges_its_answer_file_and_changes_nothing_else() {
    if !have("mkntfs", "ntfs-3g") || !have("mcopy", "mtools") || !root_or_skip("windows agent") {
        return;
    }
    let a = crate::api::appliance("127.0.0.1:0");
    crate::api::install_netboot(&a);
    let d = a.dir.path().to_path_buf();
    let (disk, start, len) = windows_layout_disk(&d, "win11");
    let vol = d.join("win11.ntfs");
    let before = ntfs_sums(&vol, &d.join("before.mnt"));
    let c = crate::api::capture_into(&a.data, "win11-poste", &disk);
    assert!(c["partitions"][2]["skipped"][0]["name"] == "pagefile.sys", "{c:#}");
    windows_department(&a, "");

    // A Linux department pointing at this image is refused before anything is queued.
    let (st, r) = a.admin.post(
        "/api/v1/machines",
        serde_json::json!({ "mac": "52:54:00:b1:00:09", "department": "salle", "install": true }),
    );
    assert_eq!(st, 409, "{r}");
    assert!(r.to_string().contains("set os = \\\"windows\\\""), "{r}");
    let mac = "52:54:00:b1:00:01";
    let (st, r) =
        a.admin.post("/api/v1/machines", serde_json::json!({ "mac": mac, "department": "bloc", "install": true }));
    assert_eq!(st, 201, "{r}");
    // The PC's disk held another system: every byte random.
    let target = crate::agent::loop_device(&d.join("target.raw"), 282 << 20);
    sh(&format!("head -c 282M /dev/urandom > {}", target.0));
    let (ok, log) = crate::agent::agent(&a, mac, &target.0);
    assert!(ok, "agent failed:\n{log}");
    assert!(log.contains("profile applied on partition 3"), "{log}");
    let (_, m) = a.admin.get(&format!("/api/v1/machines/{mac}"));
    assert_eq!((m["status"].as_str(), m["task"]["state"].as_str()), (Some("installed"), Some("done")), "{m}");

    let agent = check_windows_disk(&d, Path::new(&target.0), (start, len), "BLC-0001", &before);
    assert_eq!(agent["server"], a.srv.url.as_str());
    // The first boot reports with that credential (what report-first-boot.ps1 sends): ready.
    let token = agent["token"].as_str().unwrap();
    let (st, _) = crate::api::Api::new(&a.srv.url, Some(token)).post("/api/v1/agent/first-boot", serde_json::json!({}));
    assert_eq!(st, 200);
    let (_, m) = a.admin.get(&format!("/api/v1/machines/{mac}"));
    assert_eq!(m["status"], "ready", "{m}");
    // The ESP's files are as imaged (its free clusters still hold the old disk's bytes).
    let esp = d.join("deployed.esp");
    sh(&format!("dd if={} of={} bs=1M skip=1 count=64 status=none", target.0, s(&esp)));
    let boot = sh(&format!("mtype -i {} ::EFI/Microsoft/Boot/bootmgfw.efi | sha256sum", s(&esp)));
    assert_eq!(boot.split_whitespace().next(), Some(sha256_file(&d.join("win11.bootmgfw.efi")).as_str()));
}

/// The Samba AD DC of `tests/it/fixtures/samba-dc.sh`, stopped (namespaces removed) on drop.
struct Dc(std::path::PathBuf);

const DC_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures/samba-dc.sh");

impl Dc {
    fn start(dir: &Path) -> Dc {
        let dc = Dc(dir.to_path_buf());
        sh(&format!("{DC_SCRIPT} start {}", s(dir)));
        dc
    }

    /// `sAMAccountName`'s objectSid and pwdLastSet, from the DC's own database.
    fn account(&self, name: &str) -> Option<(String, String)> {
        let out = sh(&format!("{DC_SCRIPT} ldb {} '(sAMAccountName={name}$)' objectSid pwdLastSet", s(&self.0)));
        let get = |k: &str| out.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
        Some((get("objectSid:")?, get("pwdLastSet:")?))
    }
}

impl Drop for Dc {
    fn drop(&mut self) {
        let _ = std::process::Command::new(DC_SCRIPT).args(["stop", s(&self.0)]).status();
    }
}

#[test]
fn windows_machines_join_the_domain_offline_and_foreign_accounts_are_never_reset() {
    if !have("samba-tool", "samba") || !have("net", "samba-common-bin") || !have("mkntfs", "ntfs-3g") {
        return;
    }
    if !have("ldbsearch", "ldb-tools") || !root_or_skip("domain join") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dc = Dc::start(&work.path().join("dc"));
    let toml = format!(
        "[domain]\nrealm = \"parc.test\"\nworkgroup = \"PARC\"\njoin_user = \"parc-join\"\n\
         join_password_file = \"{}\"\nnet = \"{}\"\n",
        s(&dc.0.join("join.password")),
        s(&dc.0.join("net"))
    );
    let a = crate::api::appliance_configured("127.0.0.1:0", &[], Some(&toml));
    crate::api::install_netboot(&a);
    let d = a.dir.path().to_path_buf();
    let (disk, start, len) = windows_layout_disk(&d, "win11");
    let c = crate::api::capture_into(&a.data, "win11-poste", &disk);
    windows_department(&a, "\n[windows]\ndomain_ou = \"OU=Postes,DC=parc,DC=test\"\n");
    let target = crate::agent::loop_device(&d.join("target.raw"), 282 << 20);
    let deployed = |label: &str| -> String {
        let out = d.join(format!("{label}.ntfs"));
        sh(&format!("dd if={} of={} bs=1M skip={} count={} status=none", target.0, s(&out), start >> 20, len >> 20));
        sh(&format!("ntfscat {} Windows/Panther/unattend.xml", s(&out)))
    };
    let account_data = |xml: &str| -> String {
        let at = xml.find("<AccountData>").unwrap_or_else(|| panic!("no AccountData: {xml}")) + "<AccountData>".len();
        xml[at..at + xml[at..].find("</AccountData>").unwrap()].to_string()
    };

    // 1. A new machine: its account is created in the department's OU, the blob is in its
    //    answer file and nowhere in the journal.
    let mac = "52:54:00:b2:00:01";
    let (st, r) =
        a.admin.post("/api/v1/machines", serde_json::json!({ "mac": mac, "department": "bloc", "install": true }));
    assert_eq!(st, 201, "{r}");
    let (ok, log) = crate::agent::agent(&a, mac, &target.0);
    assert!(ok, "{log}");
    assert!(log.contains("computer account BLC-0001 in PARC.TEST provisioned"), "{log}");
    let (sid, pwd) = dc.account("BLC-0001").expect("BLC-0001 is in the directory");
    let xml = deployed("first");
    let blob = account_data(&xml);
    assert!(blob.len() > 1000 && xml.contains("<ComputerName>BLC-0001</ComputerName>"), "{xml}");
    let (_, ev) = a.admin.get("/api/v1/events?limit=200");
    assert!(!ev.to_string().contains(&blob[..64]), "the blob reached the journal");
    assert!(ev.to_string().contains("computer account BLC-0001 created"), "{ev}");

    // 2. The next hostname, BLC-0002, belongs to a computer parc did not provision: refused,
    //    its password untouched, the disk left unbootable.
    let foreign = dc.account("BLC-0002").expect("the fixture made BLC-0002");
    let mac2 = "52:54:00:b2:00:02";
    let (st, r) =
        a.admin.post("/api/v1/machines", serde_json::json!({ "mac": mac2, "department": "bloc", "install": true }));
    assert_eq!(st, 201, "{r}");
    let target2 = crate::agent::loop_device(&d.join("target2.raw"), 282 << 20);
    let (ok, log) = crate::agent::agent(&a, mac2, &target2.0);
    assert!(!ok, "{log}");
    assert!(log.contains("already exists and parc did not provision it"), "{log}");
    assert_eq!(dc.account("BLC-0002"), Some(foreign), "a foreign account's password was reset");
    let (_, m) = a.admin.get(&format!("/api/v1/machines/{mac2}"));
    assert_eq!(m["status"], "failed", "{m}");

    // 3. Replace BLC-0001's PC: the new one reuses the account (same SID, new password).
    let mac3 = "52:54:00:b2:00:03";
    let (st, r) = a.admin.post(&format!("/api/v1/machines/{mac}/replace"), serde_json::json!({ "with": mac3 }));
    assert_eq!(st, 200, "{r}");
    let (ok, log) = crate::agent::agent(&a, mac3, &target.0);
    assert!(ok, "{log}");
    let (sid2, pwd2) = dc.account("BLC-0001").unwrap();
    assert_eq!(sid2, sid, "the replacement got another account");
    assert_ne!(pwd2, pwd, "the account's password was not renewed");
    assert_ne!(account_data(&deployed("replaced")), blob, "the old blob was reused");
    // Over the disk that held BLC-0001's system only the chunks parc's files changed travel.
    let (_, t) = a.admin.get(&format!("/api/v1/tasks?machine={mac3}&limit=1"));
    let fetched: u64 = t[0]["message"]
        .as_str()
        .unwrap()
        .split(", ")
        .find_map(|p| p.strip_suffix(" bytes fetched"))
        .unwrap_or_else(|| panic!("{t}"))
        .parse()
        .unwrap();
    let stored: u64 = c["compressed_bytes"].as_u64().unwrap();
    assert!(fetched * 4 < stored, "the replace fetched {fetched} bytes of a {stored}-byte image");
    drop(dc);
}

/// The API's capture of a reference disk kept on the appliance: the gate's refusal is the
/// answer, with its findings as data and as a table; accepted, the capture ends in the journal;
/// only a plain file of `<data>/reference/` is read, only by an administrator.
#[test]
fn the_api_captures_reference_disks_and_answers_a_refusal_with_its_findings() {
    if !have("mkntfs", "ntfs-3g") || !root_or_skip("the_api_captures_reference_disks") {
        return;
    }
    let a = crate::api::appliance("127.0.0.1:0");
    let d = a.dir.path();
    let reference = a.data.join("reference");
    std::fs::create_dir_all(&reference).unwrap();
    std::fs::rename(windows_disk(d, "hib", "HIBR", Some(GENERALIZED)), reference.join("hibernated.img")).unwrap();
    std::fs::rename(windows_disk(d, "ok", "wake", Some(GENERALIZED)), reference.join("win11-ref.img")).unwrap();

    // Refused: 422, nothing stored, the findings and the table, journaled.
    let (status, r) = a.admin.post("/api/v1/images/win11/capture", serde_json::json!({ "source": "hibernated.img" }));
    assert_eq!(status, 422, "{r}");
    let f = &r["findings"].as_array().unwrap_or_else(|| panic!("{r}"))[0];
    assert_eq!((f["check"].as_str(), f["severity"].as_str()), (Some("hibernated"), Some("refuse")), "{r}");
    let table = r["table"].as_str().unwrap();
    assert!(table.contains("hibernated") && table.contains("refuse"), "{table}");
    let (_, images) = a.admin.get("/api/v1/images");
    assert!(!images.to_string().contains("win11"), "a refused capture stored an image: {images}");

    // Bad sources: a path, a link, a missing file; a technician may not capture.
    for (source, status) in [("../parc.toml", 400), ("reference/../../x", 400), ("missing.img", 404), (".hidden", 400)]
    {
        let (s, r) = a.admin.post("/api/v1/images/win11/capture", serde_json::json!({ "source": source }));
        assert_eq!(s, status, "{source}: {r}");
    }
    std::os::unix::fs::symlink(a.data.join("parc.db"), reference.join("link.img")).unwrap();
    let (s, r) = a.admin.post("/api/v1/images/win11/capture", serde_json::json!({ "source": "link.img" }));
    assert!(s == 400 && r["field"] == "source", "{r}");
    let tech = crate::api::user(&a, "bob", "Bob Tech", "technician");
    let (s, r) = tech.post("/api/v1/images/win11/capture", serde_json::json!({ "source": "win11-ref.img" }));
    assert_eq!(s, 403, "{r}");

    // Accepted: 202 at once, then the image in the store and the journal.
    let (status, r) = a.admin.post("/api/v1/images/win11/capture", serde_json::json!({ "source": "win11-ref.img" }));
    assert_eq!(status, 202, "{r}");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let events = loop {
        let (_, e) = a.admin.get("/api/v1/events?limit=50");
        if e.to_string().contains("image.capture\"") || std::time::Instant::now() > until {
            break e;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    let text = events.to_string();
    assert!(text.contains("image.capture\"") && text.contains("captured as win11@1"), "{events:#}");
    assert!(text.contains("image.capture.refused") && text.contains("image.capture.started"), "{events:#}");
    let (s, r) = a.admin.get("/api/v1/images/win11");
    assert_eq!(s, 200, "{r}");
}
