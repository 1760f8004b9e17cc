//! What a new profiles repository starts with: four example departments, their payloads and
//! first-boot scripts, an empty inventory and a README documenting the formats.

/// One file of the example repository.
#[derive(Debug, Clone, Copy)]
pub struct ExampleFile {
    pub path: &'static str,
    pub content: &'static str,
    pub executable: bool,
}

const fn file(path: &'static str, content: &'static str) -> ExampleFile {
    ExampleFile { path, content, executable: false }
}

const fn script(path: &'static str, content: &'static str) -> ExampleFile {
    ExampleFile { path, content, executable: true }
}

/// Author and committer of the initial commit, and committer of every commit the server makes.
pub const PARC_NAME: &str = "parc";
pub const PARC_EMAIL: &str = "parc@localhost";
pub const INITIAL_MESSAGE: &str = "Initial example departments";

macro_rules! first_boot {
    ($id:literal) => {
        concat!(
            "#!/bin/sh\n",
            "# Runs once, as root, on the first boot of a newly installed ",
            $id,
            " workstation.\n",
            "set -eu\n",
            "logger -t parc \"first boot of a ",
            $id,
            " workstation: $(hostname)\"\n",
        )
    };
}

/// The example repository's files.
pub const FILES: &[ExampleFile] = &[
    file("README.md", README),
    file("inventory.csv", crate::inventory::EMPTY_INVENTORY),
    file(
        "departments/radiologie.toml",
        r#"# Radiologie: reading stations for the PACS, two screens.
name = "Radiologie"
description = "Postes de radiologie (PACS, double écran)"
image = "debian-poste"
hostname = "RAD-{counter:4}"
tags = ["pacs", "double-ecran"]

[disk]
prefer = ["nvme", "sata", "virtio"]
choose = "first"
min_size = "16G"

[software]
payloads = ["payloads/radiologie"]
first_boot = "scripts/radiologie-firstboot.sh"
"#,
    ),
    file(
        "departments/urgences.toml",
        r#"# Urgences: admission and triage desks.
name = "Urgences"
description = "Postes des urgences (accueil, tri)"
image = "debian-poste"
hostname = "URG-{counter:4}"
tags = ["accueil"]

[disk]
prefer = ["nvme", "sata", "virtio"]
choose = "largest"

[software]
payloads = ["payloads/urgences"]
first_boot = "scripts/urgences-firstboot.sh"
"#,
    ),
    file(
        "departments/pharmacie.toml",
        r#"# Pharmacie: dispensing stations with a label printer.
name = "Pharmacie"
description = "Postes de la pharmacie (étiquettes)"
image = "debian-poste"
hostname = "PHA-{counter:4}"
tags = ["imprimante-etiquettes"]

[software]
payloads = ["payloads/pharmacie"]
first_boot = "scripts/pharmacie-firstboot.sh"
"#,
    ),
    file(
        "departments/administration.toml",
        r#"# Administration: office machines, named after their serial number.
name = "Administration"
description = "Postes administratifs"
image = "debian-poste"
hostname = "ADM-{serial:8}"
tags = ["bureautique"]

[disk]
prefer = ["sata", "nvme", "virtio"]
choose = "smallest"
min_size = "32G"

[software]
payloads = ["payloads/administration"]
first_boot = "scripts/administration-firstboot.sh"
"#,
    ),
    file("payloads/radiologie/etc/parc/department", "radiologie\n"),
    file("payloads/urgences/etc/parc/department", "urgences\n"),
    file("payloads/pharmacie/etc/parc/department", "pharmacie\n"),
    file("payloads/administration/etc/parc/department", "administration\n"),
    script("scripts/radiologie-firstboot.sh", first_boot!("radiologie")),
    script("scripts/urgences-firstboot.sh", first_boot!("urgences")),
    script("scripts/pharmacie-firstboot.sh", first_boot!("pharmacie")),
    script("scripts/administration-firstboot.sh", first_boot!("administration")),
];

const README: &str = r#"# Profiles of this parc appliance

This git repository is where parc keeps its departments and the inventory of machines. Edit and
commit here by hand, or pull from a remote: parc reads the files of the last commit on `main`
(never uncommitted files), and commits the changes made in its console with the technician as
author. A file with a mistake is reported with its line; parc keeps using its last good version.

## Departments: `departments/<id>.toml`

The file name without `.toml` is the department's id (lowercase letters, digits and `-`).

```toml
name = "Radiologie"                  # display name, required
description = "Postes de radiologie (PACS, double écran)"   # optional
image = "debian-poste"               # required: image name, name@3 (version) or sha256:<64 hex> (pinned)
hostname = "RAD-{counter:4}"         # required: the hostname pattern, see below
tags = ["pacs", "double-ecran"]      # optional, free-form

[disk]                               # optional; the defaults are shown
prefer = ["nvme", "sata", "virtio"]  # buses allowed, in order of preference: nvme, sata, sas, virtio, scsi
choose = "first"                     # first, largest or smallest disk of the first preferred bus that has disks
min_size = "16G"                     # optional; bytes, or K, M, G, T (powers of 1024)

[software]                           # optional
payloads = ["payloads/radiologie"]   # directories of this repository copied onto the installed system's root
first_boot = "scripts/radiologie-firstboot.sh"   # script of this repository run once, on the first boot
```

Unknown keys are mistakes. USB and removable disks are never eligible, whatever `prefer` says.
Payload and script paths are relative to this repository and must be committed with the department.

## Hostname patterns

Letters, digits and `-`, with placeholders:

| placeholder | gives |
|---|---|
| `{counter:N}` | the next free number, N digits with leading zeros (N from 1 to 9) |
| `{serial:N}` | the last N letters and digits of the machine's serial number, in uppercase |
| `{mac:N}` | the last N hex digits of the MAC address, in uppercase (N from 1 to 12) |

Names must suit Windows: at most 15 characters, not starting or ending with `-`, not all digits.
`RAD-{counter:4}` gives RAD-0001, RAD-0002, ...; `ADM-{serial:8}` gives ADM-5CG1234X.

## Inventory: `inventory.csv`

One line per machine. CSV because `git diff` and `git blame` then show exactly which machine
changed and who changed it, because it opens in LibreOffice or Excel, and because even 10,000
machines make only about 1 MB.

The first line that is not a comment names the columns, in any order:

| column | |
|---|---|
| `mac` | required: the network card's address, `aa:bb:cc:dd:ee:ff` |
| `hostname` | required column; empty until a name is assigned; unique among active machines |
| `department` | required: a department id (a file of `departments/`) |
| `serial`, `asset_tag`, `location`, `notes` | optional columns, free text (quote text that holds commas) |
| `status` | optional column: `active` (the default when empty) or `retired` |

Lines starting with `#` are comments. A retired machine keeps its line, and its hostname may be
given to another machine.
"#;
