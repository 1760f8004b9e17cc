use super::*;

const ARCH: &str = "amd64";

/// A Panther file as a sysprepped image carries it: annotated passes, x86 and amd64 copies, comments.
const PANTHER: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<!-- captured from a sysprepped reference machine -->
<?image-team revision="7"?>
<unattend xmlns="urn:schemas-microsoft-com:unattend" xmlns:wcm="http://schemas.microsoft.com/WMIConfig/2002/State">
    <settings pass="specialize" wcm:wasPassProcessed="true">
        <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
            <!-- set by the image team -->
            <ComputerName>OLDNAME</ComputerName>
            <RegisteredOrganization>Example &amp; Co</RegisteredOrganization>
            <CopyProfile>true</CopyProfile>
        </component>
        <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="x86" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
            <ComputerName>X86NAME</ComputerName>
        </component>
    </settings>
    <settings pass="oobeSystem" wcm:wasPassProcessed="true">
        <component name="Microsoft-Windows-International-Core" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
            <InputLocale>fr-FR</InputLocale>
        </component>
        <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35"
                   language='neutral' versionScope="nonSxS">
            <OOBE>
                <HideEULAPage>true</HideEULAPage>
            </OOBE>
            <FirstLogonCommands>
                <SynchronousCommand wcm:action="add">
                    <Order>1</Order>
                    <CommandLine>cmd /c echo &quot;hi&quot; &gt; C:\x.txt</CommandLine>
                </SynchronousCommand>
            </FirstLogonCommands>
        </component>
    </settings>
    <cpi:offlineImage cpi:source="wim:c:/install.wim#Windows 11 Pro" xmlns:cpi="urn:schemas-microsoft-com:cpi" />
</unattend>
"#;

const OOBE_ONLY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<unattend xmlns="urn:schemas-microsoft-com:unattend">
  <settings pass="oobeSystem">
    <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <TimeZone>UTC</TimeZone>
    </component>
  </settings>
</unattend>
"#;

const JOIN: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<unattend xmlns="urn:schemas-microsoft-com:unattend">
    <settings pass="specialize">
        <component name="Microsoft-Windows-UnattendedJoin" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
            <Identification>
                <Credentials>
                    <Domain>corp.example</Domain>
                    <Password>Hunter2!</Password>
                    <Username>joiner</Username>
                </Credentials>
                <JoinDomain>corp.example</JoinDomain>
                <MachineObjectOU>OU=Labs,DC=corp,DC=example</MachineObjectOU>
                <MachinePassword>Pr3created</MachinePassword>
            </Identification>
        </component>
    </settings>
</unattend>
"#;

const BLOB: &str = "ARAIAMzMzMyIAQAAAAAAAAAAAgABAAAAAQAAAAQAAgABAAAAAQAAAGAB==";

fn settings() -> Settings {
    Settings {
        computer_name: "PC01".to_string(),
        time_zone: "Romance Standard Time".to_string(),
        join_blob: None,
        extra: Vec::new(),
    }
}

fn with_extra(extra: Vec<Setting>) -> Settings {
    Settings { extra, ..settings() }
}

fn setting(pass: Pass, component: &str, path: &[&str], value: &str) -> Setting {
    Setting {
        pass,
        component: component.to_string(),
        path: path.iter().map(|p| p.to_string()).collect(),
        value: value.to_string(),
    }
}

fn merge_with(input: &str, s: &Settings) -> String {
    let out = merge(Some(input.as_bytes()), s, ARCH).expect("merge succeeds");
    String::from_utf8(out).expect("output is UTF-8")
}

fn merged(input: &str) -> String {
    merge_with(input, &settings())
}

fn refused(input: &[u8]) -> UnattendError {
    merge(Some(input), &settings(), ARCH).expect_err("merge refuses the input")
}

fn tree(out: &str) -> Document {
    parse(out.as_bytes()).expect("output parses")
}

fn find<'e>(el: &'e Element, step: &Step) -> Vec<&'e Element> {
    el.child_elements().filter(|e| step.matches(e)).collect()
}

/// The element at pass / component (arch) / path, asserting each level is unique.
fn element<'e>(root: &'e Element, pass: Pass, component: &str, arch: &str, path: &[&str]) -> Option<&'e Element> {
    let mut steps = vec![Step::Pass(pass), Step::Component { name: component, arch }];
    steps.extend(path.iter().map(|p| Step::Element(p)));
    let mut el = root;
    for step in &steps {
        let found = find(el, step);
        assert!(found.len() <= 1, "duplicate at {}", step.extend(""));
        el = found.first()?;
    }
    Some(el)
}

fn text_of(el: &Element) -> String {
    let raw: String = el.children.iter().map(|n| if let Node::Text(t) = n { t.as_str() } else { "" }).collect();
    unescape(&raw).expect("valid text").into_owned()
}

fn value(out: &str, pass: Pass, component: &str, arch: &str, path: &[&str]) -> Option<String> {
    let doc = tree(out);
    element(&doc.root, pass, component, arch, path).map(text_of)
}

fn shell(out: &str, name: &str) -> Option<String> {
    value(out, Pass::Specialize, SHELL_SETUP, ARCH, &[name])
}

fn child_names(el: &Element) -> Vec<&str> {
    el.child_elements().map(Element::local_name).collect()
}

/// A second, independent reading of the output with quick-xml's own checks.
fn assert_well_formed(out: &[u8]) {
    let text = std::str::from_utf8(out).expect("UTF-8");
    assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>"), "declaration first: {text}");
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_comments = true;
    let (mut depth, mut roots) = (0usize, 0usize);
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => break,
            Ok(Event::Start(_)) => {
                roots += usize::from(depth == 0);
                depth += 1;
            }
            Ok(Event::End(_)) => depth -= 1,
            Ok(Event::Empty(_)) => roots += usize::from(depth == 0),
            Ok(Event::DocType(_)) => panic!("output has a DOCTYPE"),
            Ok(_) => {}
            Err(e) => panic!("output is not well-formed at {}: {e}\n{text}", reader.error_position()),
        }
    }
    assert_eq!((depth, roots), (0, 1), "one closed root");
}

fn assert_idempotent(input: Option<&[u8]>, s: &Settings) {
    let once = merge(input, s, ARCH).expect("first merge");
    let twice = merge(Some(&once), s, ARCH).expect("second merge");
    assert_eq!(String::from_utf8_lossy(&once), String::from_utf8_lossy(&twice));
}

/// `input[from..]` up to and including the first `to` after it.
fn section<'a>(input: &'a str, from: &str, to: &str) -> &'a str {
    let start = input.find(from).expect("start marker");
    let end = start + input[start..].find(to).expect("end marker") + to.len();
    &input[start..end]
}

// --- shapes of input ---------------------------------------------------------------------------------

#[test]
fn no_file_gives_a_minimal_document() {
    let out = String::from_utf8(merge(None, &settings(), ARCH).unwrap()).unwrap();
    let expected = concat!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n",
        "<unattend xmlns=\"urn:schemas-microsoft-com:unattend\">\n",
        "    <settings pass=\"specialize\">\n",
        "        <component name=\"Microsoft-Windows-Shell-Setup\" processorArchitecture=\"amd64\" ",
        "publicKeyToken=\"31bf3856ad364e35\" language=\"neutral\" versionScope=\"nonSxS\" ",
        "xmlns:wcm=\"http://schemas.microsoft.com/WMIConfig/2002/State\" ",
        "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n",
        "            <ComputerName>PC01</ComputerName>\n",
        "            <TimeZone>Romance Standard Time</TimeZone>\n",
        "        </component>\n",
        "    </settings>\n",
        "</unattend>\n",
    );
    assert_eq!(out, expected);
    assert_well_formed(out.as_bytes());
}

#[test]
fn no_file_with_join_blob_gets_the_join_component() {
    let s = Settings { join_blob: Some(BLOB.to_string()), ..settings() };
    let out = String::from_utf8(merge(None, &s, ARCH).unwrap()).unwrap();
    assert_eq!(value(&out, Pass::Specialize, UNATTENDED_JOIN, ARCH, &ACCOUNT_DATA_PATH).as_deref(), Some(BLOB));
    assert_eq!(shell(&out, "ComputerName").as_deref(), Some("PC01"));
    assert_well_formed(out.as_bytes());
}

#[test]
fn file_without_specialize_pass_gains_one_before_oobe_system() {
    let out = merged(OOBE_ONLY);
    let doc = tree(&out);
    let passes: Vec<&str> = doc.root.child_elements().filter_map(|e| e.attr("pass")).collect();
    assert_eq!(passes, ["specialize", "oobeSystem"], "Setup's order");
    let component = element(&doc.root, Pass::Specialize, SHELL_SETUP, ARCH, &[]).unwrap();
    let identity: Vec<(&str, &str)> = component.attrs.iter().map(|a| (a.name.as_str(), a.value.as_str())).collect();
    assert_eq!(
        identity,
        [
            ("name", SHELL_SETUP),
            ("processorArchitecture", "amd64"),
            ("publicKeyToken", "31bf3856ad364e35"),
            ("language", "neutral"),
            ("versionScope", "nonSxS"),
            ("xmlns:wcm", WCM_NS),
            ("xmlns:xsi", XSI_NS),
        ]
    );
    assert_eq!(shell(&out, "ComputerName").as_deref(), Some("PC01"));
    assert_eq!(value(&out, Pass::OobeSystem, SHELL_SETUP, ARCH, &["TimeZone"]).as_deref(), Some("UTC"));
    // The file's two-space layout is followed.
    assert!(out.contains("\n  <settings pass=\"specialize\">\n    <component "), "{out}");
    assert!(out.contains("\n      <ComputerName>PC01</ComputerName>\n"), "{out}");
    assert_well_formed(out.as_bytes());
}

#[test]
fn annotated_pass_loses_was_pass_processed_and_untouched_pass_keeps_it() {
    let out = merged(PANTHER);
    let doc = tree(&out);
    let specialize = find(&doc.root, &Step::Pass(Pass::Specialize))[0];
    assert!(specialize.attrs.iter().all(|a| local_part(&a.name) != PASS_MARK), "{out}");
    assert!(out.contains("<settings pass=\"specialize\">"), "{out}");
    let oobe = find(&doc.root, &Step::Pass(Pass::OobeSystem))[0];
    assert_eq!(oobe.attr("wcm:wasPassProcessed"), Some("true"));
}

#[test]
fn unprefixed_mark_is_removed_too() {
    let input = PANTHER.replace("wcm:wasPassProcessed", "wasPassProcessed");
    let out = merged(&input);
    assert!(out.contains("<settings pass=\"specialize\">"), "{out}");
    assert!(out.contains("<settings pass=\"oobeSystem\" wasPassProcessed=\"true\">"), "{out}");
}

#[test]
fn extra_setting_in_another_pass_clears_that_pass_mark() {
    let s =
        with_extra(vec![setting(Pass::OobeSystem, "Microsoft-Windows-International-Core", &["UILanguage"], "fr-FR")]);
    let out = merge_with(PANTHER, &s);
    let doc = tree(&out);
    let oobe = find(&doc.root, &Step::Pass(Pass::OobeSystem))[0];
    assert_eq!(oobe.attr("wcm:wasPassProcessed"), None);
    let core = element(&doc.root, Pass::OobeSystem, "Microsoft-Windows-International-Core", ARCH, &[]).unwrap();
    assert_eq!(child_names(core), ["InputLocale", "UILanguage"]);
}

#[test]
fn only_the_matching_architecture_is_changed() {
    let out = merged(PANTHER);
    assert_eq!(shell(&out, "ComputerName").as_deref(), Some("PC01"));
    assert_eq!(value(&out, Pass::Specialize, SHELL_SETUP, "x86", &["ComputerName"]).as_deref(), Some("X86NAME"));
    assert_eq!(value(&out, Pass::Specialize, SHELL_SETUP, "x86", &["TimeZone"]), None);
    let x86 = section(
        PANTHER,
        "<component name=\"Microsoft-Windows-Shell-Setup\" processorArchitecture=\"x86\"",
        "</component>",
    );
    assert!(out.contains(x86), "x86 copy unchanged:\n{out}");
}

#[test]
fn architecture_is_matched_ignoring_case() {
    let input = PANTHER.replace("processorArchitecture=\"amd64\"", "processorArchitecture=\"AMD64\"");
    let out = merged(&input);
    let doc = tree(&out);
    let copies =
        find(find(&doc.root, &Step::Pass(Pass::Specialize))[0], &Step::Component { name: SHELL_SETUP, arch: ARCH });
    assert_eq!(copies.len(), 1, "edited, not duplicated");
    assert_eq!(text_of(find(copies[0], &Step::Element("ComputerName"))[0]), "PC01");
}

#[test]
fn existing_computer_name_is_replaced_and_other_children_kept() {
    let out = merged(PANTHER);
    let doc = tree(&out);
    let component = element(&doc.root, Pass::Specialize, SHELL_SETUP, ARCH, &[]).unwrap();
    assert_eq!(child_names(component), ["ComputerName", "RegisteredOrganization", "CopyProfile", "TimeZone"]);
    assert_eq!(shell(&out, "RegisteredOrganization").as_deref(), Some("Example & Co"));
    assert_eq!(shell(&out, "CopyProfile").as_deref(), Some("true"));
    assert_eq!(shell(&out, "TimeZone").as_deref(), Some("Romance Standard Time"));
    assert!(!out.contains("OLDNAME"));
    assert!(out.contains("            <CopyProfile>true</CopyProfile>\n            <TimeZone>"), "{out}");
}

#[test]
fn empty_element_gets_the_text() {
    let input = PANTHER.replace("<ComputerName>OLDNAME</ComputerName>", "<ComputerName/>");
    let out = merged(&input);
    assert_eq!(shell(&out, "ComputerName").as_deref(), Some("PC01"));
}

#[test]
fn comments_processing_instructions_and_foreign_elements_are_kept() {
    let out = merged(PANTHER);
    assert!(out.contains("<!-- captured from a sysprepped reference machine -->"));
    assert!(out.contains("<?image-team revision=\"7\"?>"));
    assert!(out.contains("<!-- set by the image team -->"));
    assert!(out.contains(
            r#"<cpi:offlineImage cpi:source="wim:c:/install.wim#Windows 11 Pro" xmlns:cpi="urn:schemas-microsoft-com:cpi" />"#
        ));
    assert!(out.contains("xmlns:wcm=\"http://schemas.microsoft.com/WMIConfig/2002/State\">"));
    let doc = tree(&out);
    assert!(matches!(&doc.prolog[..], [Node::Comment(_), Node::Pi(_)]));
}

#[test]
fn untouched_pass_is_written_back_as_it_was() {
    let out = merged(PANTHER);
    let oobe = section(PANTHER, "<settings pass=\"oobeSystem\"", "</settings>");
    assert!(out.contains(oobe), "oobeSystem verbatim:\n{out}");
    // And read back, its settings are the same.
    for (component, path, text) in [
        ("Microsoft-Windows-International-Core", &["InputLocale"][..], "fr-FR"),
        (SHELL_SETUP, &["OOBE", "HideEULAPage"][..], "true"),
        (
            SHELL_SETUP,
            &["FirstLogonCommands", "SynchronousCommand", "CommandLine"][..],
            "cmd /c echo \"hi\" > C:\\x.txt",
        ),
    ] {
        assert_eq!(value(&out, Pass::OobeSystem, component, ARCH, path).as_deref(), Some(text));
    }
}

#[test]
fn utf16le_input_is_decoded_and_written_as_utf8() {
    let input = PANTHER.replace("encoding=\"utf-8\"", "encoding=\"utf-16\"");
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(input.encode_utf16().flat_map(u16::to_le_bytes));
    let out = merge(Some(&bytes), &settings(), ARCH).unwrap();
    let text = String::from_utf8(out.clone()).expect("UTF-8 out");
    assert_well_formed(&out);
    assert_eq!(shell(&text, "ComputerName").as_deref(), Some("PC01"));
    assert!(text.contains("<!-- set by the image team -->"));
    assert_eq!(text, merged(PANTHER), "same result as the UTF-8 file");
}

#[test]
fn utf8_bom_is_accepted_and_dropped() {
    let mut bytes = vec![0xEF, 0xBB, 0xBF];
    bytes.extend_from_slice(PANTHER.as_bytes());
    let out = merge(Some(&bytes), &settings(), ARCH).unwrap();
    assert!(out.starts_with(b"<?xml"));
    assert_eq!(String::from_utf8(out).unwrap(), merged(PANTHER));
}

#[test]
fn crlf_file_gets_crlf_for_created_lines() {
    let out = merged(&OOBE_ONLY.replace('\n', "\r\n"));
    assert!(out.contains("<ComputerName>PC01</ComputerName>\r\n"));
    assert!(out.match_indices('\n').all(|(i, _)| i > 0 && out.as_bytes()[i - 1] == b'\r'), "{out:?}");
}

#[test]
fn compact_file_stays_compact() {
    let input = concat!(
        r#"<unattend xmlns="urn:schemas-microsoft-com:unattend"><settings pass="specialize">"#,
        r#"<component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64">"#,
        r#"<ComputerName>X</ComputerName></component></settings></unattend>"#,
    );
    let out = merged(input);
    assert!(
        out.contains("<ComputerName>PC01</ComputerName><TimeZone>Romance Standard Time</TimeZone></component>"),
        "{out}"
    );
}

#[test]
fn prefixed_unattend_namespace_gets_declared_on_created_elements() {
    let input = concat!(
        r#"<u:unattend xmlns:u="urn:schemas-microsoft-com:unattend">"#,
        r#"<u:settings pass="oobeSystem"/>"#,
        r#"</u:unattend>"#,
    );
    let out = merged(input);
    assert!(out.contains("<settings pass=\"specialize\" xmlns=\"urn:schemas-microsoft-com:unattend\">"), "{out}");
    let doc = tree(&out);
    let component = element(&doc.root, Pass::Specialize, SHELL_SETUP, ARCH, &[]).unwrap();
    assert_eq!(component.attr("xmlns"), None, "inherited from the created settings");
    assert_eq!(shell(&out, "ComputerName").as_deref(), Some("PC01"));
    assert_well_formed(out.as_bytes());
}

#[test]
fn cdata_and_single_quoted_attributes_survive() {
    let input = concat!(
        r#"<unattend xmlns="urn:schemas-microsoft-com:unattend">"#,
        r#"<settings pass='specialize' wcm:wasPassProcessed='true' note='say "hi"' "#,
        r#"xmlns:wcm="http://schemas.microsoft.com/WMIConfig/2002/State">"#,
        r#"<component name="X" processorArchitecture="amd64"><Script><![CDATA[if a < b then]]></Script>"#,
        r#"</component></settings></unattend>"#,
    );
    let out = merged(input);
    assert!(out.contains("<![CDATA[if a < b then]]>"), "{out}");
    assert!(out.contains("note='say &quot;hi&quot;'") || out.contains("note=\"say &quot;hi&quot;\""), "{out}");
    assert_well_formed(out.as_bytes());
    assert_eq!(tree(&out).root.child_elements().next().unwrap().attr("note"), Some("say \"hi\""));
}

// --- join --------------------------------------------------------------------------------------------

#[test]
fn join_blob_replaces_other_join_methods() {
    let s = Settings { join_blob: Some(BLOB.to_string()), ..settings() };
    let out = merge_with(JOIN, &s);
    let doc = tree(&out);
    let identification = element(&doc.root, Pass::Specialize, UNATTENDED_JOIN, ARCH, &["Identification"]).unwrap();
    assert_eq!(child_names(identification), ["MachineObjectOU", "Provisioning"]);
    assert_eq!(value(&out, Pass::Specialize, UNATTENDED_JOIN, ARCH, &ACCOUNT_DATA_PATH).as_deref(), Some(BLOB));
    assert!(!out.contains("Hunter2!") && !out.contains("Pr3created"), "old secrets gone: {out}");
    let layout = concat!(
        "\n                <MachineObjectOU>OU=Labs,DC=corp,DC=example</MachineObjectOU>",
        "\n                <Provisioning>",
        "\n                    <AccountData>",
    );
    assert!(out.contains(layout), "{out}");
    assert_well_formed(out.as_bytes());
    assert_idempotent(Some(JOIN.as_bytes()), &s);
}

#[test]
fn without_a_blob_the_join_component_is_left_alone() {
    let out = merged(JOIN);
    let component = section(JOIN, "<component name=\"Microsoft-Windows-UnattendedJoin\"", "</component>");
    assert!(out.contains(component), "{out}");
}

#[test]
fn join_blob_must_be_base64() {
    for blob in ["", "not base64!", "AAAA\r\nBBBB", "\u{feff}AAAA"] {
        let s = Settings { join_blob: Some(blob.to_string()), ..settings() };
        let err = merge(None, &s, ARCH).unwrap_err();
        assert!(matches!(err, UnattendError::InvalidValue { .. }), "{blob:?}: {err}");
        assert!(blob.is_empty() || !err.to_string().contains(blob), "blob not echoed: {err}");
    }
}

#[test]
fn debug_output_hides_the_blob() {
    let s = Settings { join_blob: Some(BLOB.to_string()), ..settings() };
    let shown = format!("{s:?}");
    assert!(!shown.contains(BLOB) && shown.contains("<redacted>"), "{shown}");
}

// --- extra settings ----------------------------------------------------------------------------------

#[test]
fn extra_settings_create_passes_in_setup_order() {
    let s = with_extra(vec![
        setting(Pass::AuditSystem, "Microsoft-Windows-Deployment", &["Reseal", "Mode"], "OOBE"),
        setting(Pass::WindowsPE, "Microsoft-Windows-Setup", &["EnableNetwork"], "true"),
        setting(Pass::Specialize, SHELL_SETUP, &["RegisteredOwner"], "Lab"),
    ]);
    let out = merge_with(OOBE_ONLY, &s);
    let doc = tree(&out);
    let passes: Vec<&str> = doc.root.child_elements().filter_map(|e| e.attr("pass")).collect();
    assert_eq!(passes, ["windowsPE", "specialize", "auditSystem", "oobeSystem"]);
    let reseal = value(&out, Pass::AuditSystem, "Microsoft-Windows-Deployment", ARCH, &["Reseal", "Mode"]);
    assert_eq!(reseal.as_deref(), Some("OOBE"));
    assert_eq!(shell(&out, "RegisteredOwner").as_deref(), Some("Lab"));
    assert_well_formed(out.as_bytes());
    assert_idempotent(Some(OOBE_ONLY.as_bytes()), &s);
}

#[test]
fn values_are_escaped() {
    let tricky = "a<b & \"c\" > 'd'";
    let s = with_extra(vec![setting(Pass::Specialize, SHELL_SETUP, &["RegisteredOwner"], tricky)]);
    let out = merge_with(PANTHER, &s);
    assert!(out.contains("<RegisteredOwner>a&lt;b &amp; &quot;c&quot; &gt; &apos;d&apos;</RegisteredOwner>"), "{out}");
    assert_eq!(shell(&out, "RegisteredOwner").as_deref(), Some(tricky));
    assert_well_formed(out.as_bytes());
}

#[test]
fn control_characters_in_values_are_refused() {
    let cases = [
        Settings { time_zone: "UTC\n".to_string(), ..settings() },
        Settings { time_zone: "\u{7}".to_string(), ..settings() },
        with_extra(vec![setting(Pass::Specialize, SHELL_SETUP, &["RegisteredOwner"], "a\u{1}b")]),
        with_extra(vec![setting(Pass::Specialize, SHELL_SETUP, &["RegisteredOwner"], "tab\there")]),
        with_extra(vec![setting(Pass::Specialize, SHELL_SETUP, &["RegisteredOwner"], "\u{FFFE}")]),
    ];
    for s in cases {
        let err = merge(None, &s, ARCH).unwrap_err();
        assert!(matches!(err, UnattendError::InvalidValue { .. }), "{s:?}: {err}");
    }
}

#[test]
fn time_zone_must_be_present_and_short() {
    for zone in [String::new(), "   ".to_string(), "x".repeat(257)] {
        let s = Settings { time_zone: zone, ..settings() };
        assert!(matches!(merge(None, &s, ARCH), Err(UnattendError::InvalidValue { .. })));
    }
}

#[test]
fn settings_that_overlap_are_refused() {
    let s = Settings {
        join_blob: Some(BLOB.to_string()),
        ..with_extra(vec![setting(Pass::Specialize, UNATTENDED_JOIN, &["Identification"], "x")])
    };
    assert!(matches!(merge(None, &s, ARCH), Err(UnattendError::Conflict { .. })));
    let s = with_extra(vec![setting(Pass::Specialize, "microsoft-windows-shell-setup", &["ComputerName"], "B")]);
    assert!(matches!(merge(None, &s, ARCH), Err(UnattendError::Conflict { .. })));
    let twice = setting(Pass::OobeSystem, SHELL_SETUP, &["OOBE", "HideEULAPage"], "true");
    let s = with_extra(vec![twice.clone(), twice]);
    assert!(matches!(merge(None, &s, ARCH), Err(UnattendError::Conflict { .. })));
    // Same path in another pass is no overlap.
    let s = with_extra(vec![setting(Pass::OobeSystem, SHELL_SETUP, &["TimeZone"], "UTC")]);
    assert!(merge(None, &s, ARCH).is_ok());
}

#[test]
fn bad_names_in_extra_settings_are_refused() {
    for (component, path) in [
        ("Microsoft-Windows-Shell-Setup", &[][..]),
        ("", &["A"][..]),
        ("Bad\"Name", &["A"][..]),
        (SHELL_SETUP, &["wcm:Thing"][..]),
        (SHELL_SETUP, &["1st"][..]),
        (SHELL_SETUP, &["OOBE", "Hide Eula"][..]),
    ] {
        let s = with_extra(vec![setting(Pass::OobeSystem, component, path, "x")]);
        assert!(matches!(merge(None, &s, ARCH), Err(UnattendError::InvalidName { .. })), "{component} {path:?}");
    }
}

#[test]
fn element_with_children_is_not_overwritten() {
    let s = with_extra(vec![setting(Pass::OobeSystem, SHELL_SETUP, &["OOBE"], "x")]);
    let err = merge(Some(PANTHER.as_bytes()), &s, ARCH).unwrap_err();
    assert!(matches!(err, UnattendError::NotALeaf { .. }), "{err}");
}

#[test]
fn unknown_architecture_is_refused() {
    for arch in ["", "x64", "AMD64 "] {
        assert!(matches!(merge(None, &settings(), arch), Err(UnattendError::UnknownArchitecture { .. })));
    }
    assert!(merge(None, &settings(), "arm64").is_ok());
}

// --- ambiguity ---------------------------------------------------------------------------------------

#[test]
fn duplicate_pass_is_refused() {
    let input = PANTHER.replace("<settings pass=\"oobeSystem\"", "<settings pass=\"specialize\"");
    assert!(matches!(refused(input.as_bytes()), UnattendError::DuplicatePass { pass: Pass::Specialize }));
    // Even one parc does not touch: the file is ambiguous for Windows too.
    let input = OOBE_ONLY.replace("</unattend>", "  <settings pass=\"oobeSystem\"/>\n</unattend>");
    assert!(matches!(refused(input.as_bytes()), UnattendError::DuplicatePass { pass: Pass::OobeSystem }));
}

#[test]
fn duplicate_component_or_setting_is_refused() {
    let input = PANTHER.replace("processorArchitecture=\"x86\"", "processorArchitecture=\"amd64\"");
    let err = refused(input.as_bytes());
    assert!(matches!(&err, UnattendError::Duplicate { location } if location.contains("component")), "{err}");
    let input = PANTHER.replace("<CopyProfile>true</CopyProfile>", "<ComputerName>B</ComputerName>");
    let err = refused(input.as_bytes());
    assert!(matches!(&err, UnattendError::Duplicate { location } if location.contains("<ComputerName>")), "{err}");
}

// --- refused input -----------------------------------------------------------------------------------

#[test]
fn doctype_with_entities_is_refused() {
    let input = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<unattend xmlns="urn:schemas-microsoft-com:unattend">&lol2;</unattend>"#;
    let err = refused(input.as_bytes());
    assert!(matches!(err, UnattendError::DocType { offset } if offset == input.find("<!DOCTYPE").unwrap()), "{err}");
}

#[test]
fn undefined_entity_is_refused() {
    let input = r#"<unattend xmlns="urn:schemas-microsoft-com:unattend"><x>&lol;</x></unattend>"#;
    let err = refused(input.as_bytes());
    assert!(matches!(&err, UnattendError::UndefinedEntity { name, .. } if name == "lol"), "{err}");
    let input = r#"<unattend xmlns="urn:schemas-microsoft-com:unattend"><x a="&lol;"/></unattend>"#;
    assert!(matches!(refused(input.as_bytes()), UnattendError::Malformed { .. }));
}

#[test]
fn wrong_root_or_namespace_is_refused() {
    let err = refused(br#"<html xmlns="urn:schemas-microsoft-com:unattend"/>"#);
    assert!(matches!(&err, UnattendError::WrongRoot { found } if found == "html"), "{err}");
    let err = refused(br#"<unattend xmlns="urn:schemas-microsoft-com:unattend:v2"/>"#);
    assert!(matches!(&err, UnattendError::WrongNamespace { found } if found.ends_with(":v2")), "{err}");
    let err = refused(b"<unattend><settings pass=\"specialize\"/></unattend>");
    assert!(matches!(&err, UnattendError::WrongNamespace { found } if found == "(none)"), "{err}");
    let err = refused(br#"<u:unattend xmlns="urn:schemas-microsoft-com:unattend" xmlns:u="urn:other"/>"#);
    assert!(matches!(err, UnattendError::WrongNamespace { .. }), "{err}");
}

#[test]
fn truncated_file_is_refused() {
    let cuts = [
        PANTHER.find("<CopyProfile>").unwrap(),           // between elements
        PANTHER.find("<CopyProfile>").unwrap() + 5,       // inside a tag
        PANTHER.find("language='neutral'").unwrap() + 11, // inside a quoted attribute
        PANTHER.len() - "</unattend>\n".len(),            // before the root's end tag
    ];
    for cut in cuts {
        let err = refused(&PANTHER.as_bytes()[..cut]);
        assert!(matches!(err, UnattendError::Truncated { .. }), "cut at {cut}: {err}");
    }
}

#[test]
fn oversized_file_is_refused() {
    let mut input = PANTHER.replace("</unattend>", "<!-- ").into_bytes();
    input.resize(2 * 1024 * 1024, b'x');
    input.extend_from_slice(b" --></unattend>");
    let err = refused(&input);
    assert!(matches!(err, UnattendError::TooLarge { limit: MAX_SIZE, .. }), "{err}");
}

#[test]
fn deep_nesting_is_refused() {
    let depth = 100_000;
    let input = format!("<unattend xmlns=\"{UNATTEND_NS}\">{}{}</unattend>", "<a>".repeat(depth), "</a>".repeat(depth));
    assert!(matches!(refused(input.as_bytes()), UnattendError::TooDeep { limit: MAX_DEPTH, .. }));
    let depth = MAX_DEPTH - 1;
    let input = format!("<unattend xmlns=\"{UNATTEND_NS}\">{}{}</unattend>", "<a>".repeat(depth), "</a>".repeat(depth));
    assert!(merge(Some(input.as_bytes()), &settings(), ARCH).is_ok());
}

#[test]
fn not_xml_is_refused() {
    assert!(matches!(refused(b""), UnattendError::NoRoot));
    assert!(matches!(refused(b"  \n"), UnattendError::NoRoot));
    assert!(matches!(refused(b"<!-- only a comment -->"), UnattendError::NoRoot));
    assert!(matches!(refused(b"ComputerName=PC01\n"), UnattendError::Malformed { offset: 0, .. }));
    assert!(matches!(refused(b"\x89PNG\r\n\x1a\n"), UnattendError::BadEncoding { offset: 0, .. }));
    let two_roots = format!("{}<unattend xmlns=\"{UNATTEND_NS}\"/>", OOBE_ONLY);
    assert!(matches!(refused(two_roots.as_bytes()), UnattendError::Malformed { .. }));
}

#[test]
fn malformed_file_reports_the_byte_position() {
    let input = r#"<unattend xmlns="urn:schemas-microsoft-com:unattend"><settings pass="specialize"></unattend>"#;
    let err = refused(input.as_bytes());
    let expected = input.find("</unattend>").unwrap();
    assert!(matches!(err, UnattendError::Malformed { offset, .. } if offset == expected), "{err}");
    let input = "<unattend xmlns=\"urn:schemas-microsoft-com:unattend\"><!-- a -- b --></unattend>";
    assert!(matches!(refused(input.as_bytes()), UnattendError::Malformed { .. }));
    let input = "<unattend xmlns=\"urn:schemas-microsoft-com:unattend\" a=\"1\" a=\"2\"/>";
    assert!(matches!(refused(input.as_bytes()), UnattendError::Malformed { .. }));
    let input = "<unattend xmlns=\"urn:schemas-microsoft-com:unattend\"><x>a ]]> b</x></unattend>";
    assert!(matches!(refused(input.as_bytes()), UnattendError::Malformed { .. }));
    let input = "<unattend xmlns=\"urn:schemas-microsoft-com:unattend\"><p:x/></unattend>";
    assert!(matches!(refused(input.as_bytes()), UnattendError::Malformed { .. }), "undeclared prefix");
}

#[test]
fn characters_xml_forbids_are_refused_with_their_position() {
    let input = "<unattend xmlns=\"urn:schemas-microsoft-com:unattend\">\u{1}</unattend>";
    let at = input.find('\u{1}').unwrap();
    let err = refused(input.as_bytes());
    assert!(matches!(err, UnattendError::InvalidCharacter { code: 1, offset } if offset == at), "{err}");
    // In a UTF-16 file the position counts the file's own bytes.
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(input.encode_utf16().flat_map(u16::to_le_bytes));
    let err = refused(&utf16);
    assert!(matches!(err, UnattendError::InvalidCharacter { code: 1, offset } if offset == 2 + 2 * at), "{err}");
    let input = "<unattend xmlns=\"urn:schemas-microsoft-com:unattend\"><x>&#1;</x></unattend>";
    assert!(matches!(refused(input.as_bytes()), UnattendError::UndefinedEntity { .. }));
    let input = "<unattend xmlns=\"urn:schemas-microsoft-com:unattend\" a=\"&#x1;\"/>";
    assert!(matches!(refused(input.as_bytes()), UnattendError::InvalidCharacter { code: 1, .. }));
}

#[test]
fn other_encodings_are_refused() {
    let body = PANTHER.as_bytes();
    for (prefix, name) in
        [(&[0xFE, 0xFF][..], "UTF-16BE"), (&[0xFF, 0xFE, 0, 0][..], "UTF-32LE"), (&[0, 0, 0xFE, 0xFF][..], "UTF-32BE")]
    {
        let err = refused(&[prefix, body].concat());
        assert!(matches!(&err, UnattendError::UnsupportedEncoding { found } if found == name), "{err}");
    }
    let no_bom: Vec<u8> = PANTHER.encode_utf16().flat_map(u16::to_le_bytes).collect();
    assert!(matches!(refused(&no_bom), UnattendError::UnsupportedEncoding { .. }));
    let latin1 =
        PANTHER.replace("encoding=\"utf-8\"", "encoding=\"iso-8859-1\"").replace("Example", "Soci\u{e9}t\u{e9}");
    assert!(
        matches!(refused(latin1.as_bytes()), UnattendError::UnsupportedEncoding { found } if found == "iso-8859-1")
    );
    let ascii = PANTHER.replace("encoding=\"utf-8\"", "encoding=\"windows-1252\"");
    assert_eq!(merged(&ascii), merged(PANTHER), "ASCII reads the same in either");
    let mut raw_latin1 = PANTHER.as_bytes().to_vec();
    let at = PANTHER.find("Example").unwrap();
    raw_latin1.insert(at, 0xE9);
    assert!(matches!(refused(&raw_latin1), UnattendError::BadEncoding { encoding: "UTF-8", offset } if offset == at));
    let odd = [&[0xFF, 0xFE][..], &no_bom, &[0x3C]].concat();
    assert!(matches!(refused(&odd), UnattendError::BadEncoding { encoding: "UTF-16LE", .. }));
}

#[test]
fn xml_1_1_is_refused() {
    let input = PANTHER.replace("version=\"1.0\"", "version=\"1.1\"");
    assert!(matches!(refused(input.as_bytes()), UnattendError::UnsupportedXmlVersion { .. }));
}

// --- round trips -------------------------------------------------------------------------------------

#[test]
fn merging_twice_changes_nothing() {
    let join = Settings { join_blob: Some(BLOB.to_string()), ..settings() };
    assert_idempotent(None, &settings());
    assert_idempotent(None, &join);
    for input in [PANTHER, OOBE_ONLY, JOIN] {
        assert_idempotent(Some(input.as_bytes()), &settings());
        assert_idempotent(Some(input.as_bytes()), &join);
        assert_idempotent(Some(input.replace('\n', "\r\n").as_bytes()), &join);
    }
}

#[test]
fn output_is_well_formed_for_every_fixture() {
    let join = Settings { join_blob: Some(BLOB.to_string()), ..settings() };
    for input in [PANTHER, OOBE_ONLY, JOIN] {
        assert_well_formed(&merge(Some(input.as_bytes()), &join, ARCH).unwrap());
    }
}

#[test]
fn computer_names() {
    for good in ["PC01", "A", "LAB-0123456789A", "pc_01", "\u{e9}cole"] {
        assert!(validate_computer_name(good).is_ok(), "{good}");
    }
    for (bad, why) in [
        ("", "is empty"),
        ("LAB-0123456789AB", "longer than 15 bytes"),
        ("\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}", "longer than 15 bytes"),
        ("PC 01", "space"),
        ("PC\t01", "control or whitespace"),
        ("12345", "digits only"),
        ("PC.01", "forbids"),
        ("*", "forbids"),
        ("PC&01", "forbids"),
        ("PC`01", "forbids"),
        ("a\\b", "forbids"),
    ] {
        let err = validate_computer_name(bad).unwrap_err();
        assert!(err.to_string().contains(why), "{bad:?}: {err}");
    }
    assert!(matches!(
        merge(None, &Settings { computer_name: "PC 01".into(), ..settings() }, ARCH),
        Err(UnattendError::InvalidComputerName { .. })
    ));
}
