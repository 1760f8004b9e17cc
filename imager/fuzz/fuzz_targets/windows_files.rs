#![no_main]
//! Whatever an image's `unattend.xml` or `SetupComplete.cmd` holds, the merges never panic,
//! and what they write merges again into itself (a second deploy changes nothing).

use libfuzzer_sys::fuzz_target;
use parc_agent::windows::{setupcomplete, unattend};

fuzz_target!(|data: &[u8]| {
    let s = unattend::Settings {
        computer_name: "BLC-0001".into(),
        time_zone: "Romance Standard Time".into(),
        join_blob: Some("ARAIAMzMzMwAAAAA".into()),
        extra: Vec::new(),
    };
    if let Ok(out) = unattend::merge(Some(data), &s, "amd64") {
        let again = unattend::merge(Some(&out), &s, "amd64").expect("parc's own output merges");
        assert_eq!(again, out, "merging twice changed the answer file");
    }
    let call = r#"call "%SystemDrive%\parc\firstboot.cmd""#;
    if let Ok(out) = setupcomplete::merge(Some(data), call) {
        let again = setupcomplete::merge(Some(&out), call).expect("parc's own output merges");
        assert_eq!(again, out, "merging twice changed SetupComplete.cmd");
    }
});
