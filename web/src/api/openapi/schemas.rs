//! `#/components/schemas`: what each handler answers and accepts, written from the structs it
//! serializes and the checks it makes. Answers list every field they always carry and nothing
//! else (`additionalProperties: false`), so a field added to a handler and not here is caught
//! by the contract test (`tests/it/api.rs`); requests carry the limits the server enforces.

use serde_json::{json, Map, Value};

/// A reference to another component.
pub fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn integer() -> Value {
    json!({ "type": "integer", "minimum": i64::MIN, "maximum": i64::MAX })
}

/// An unsigned 64-bit count (bytes, rates).
fn count() -> Value {
    json!({ "type": "integer", "minimum": 0, "maximum": u64::MAX })
}

fn boolean() -> Value {
    json!({ "type": "boolean" })
}

fn array(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

fn strings() -> Value {
    array(string())
}

/// Unix milliseconds.
fn time_ms() -> Value {
    json!({ "type": "integer", "minimum": 0, "maximum": i64::MAX, "description": "Unix time, milliseconds" })
}

/// `v` or `null` (an `Option` the server always writes).
fn null_or(mut v: Value) -> Value {
    match v.get("type").cloned() {
        Some(Value::String(t)) => {
            v["type"] = json!([t, "null"]);
            if let Some(e) = v.get_mut("enum").and_then(Value::as_array_mut) {
                e.push(Value::Null);
            }
            v
        }
        _ => json!({ "anyOf": [v, { "type": "null" }] }),
    }
}

/// `v` without its `pattern`s.
fn without_patterns(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("pattern");
        for (_, inner) in o.iter_mut() {
            if let Some(a) = inner.as_array_mut() {
                for x in a.iter_mut() {
                    *x = without_patterns(x.take());
                }
            }
        }
    }
    v
}

fn described(mut v: Value, description: &str) -> Value {
    v["description"] = description.into();
    v
}

fn one_of(values: &[&str]) -> Value {
    json!({ "type": "string", "enum": values })
}

/// An answer: every property always present, no other.
fn answer(props: &[(&str, Value)]) -> Value {
    let names: Vec<&str> = props.iter().map(|(n, _)| *n).collect();
    json!({ "type": "object", "properties": props_map(props), "required": names, "additionalProperties": false })
}

/// An answer with fields that are left out when empty (`skip_serializing_if`).
fn answer_with_optional(props: &[(&str, Value)], optional: &[(&str, Value)]) -> Value {
    let mut v = answer(props);
    let map = v["properties"].as_object_mut().expect("object");
    for (n, s) in optional {
        map.insert((*n).to_string(), s.clone());
    }
    v
}

/// A request body: `(name, required, schema)`; unknown fields are refused (400 naming them).
fn request(fields: &[(&str, bool, Value)]) -> Value {
    let props: Vec<(&str, Value)> = fields.iter().map(|(n, _, s)| (*n, s.clone())).collect();
    let required: Vec<&str> = fields.iter().filter(|(_, req, _)| *req).map(|(n, _, _)| *n).collect();
    json!({ "type": "object", "properties": props_map(&props), "required": required, "additionalProperties": false })
}

fn props_map(props: &[(&str, Value)]) -> Map<String, Value> {
    props.iter().map(|(n, s)| ((*n).to_string(), s.clone())).collect()
}

/// Properties of an object schema, to build another from it (serde's `flatten`).
fn props_of(v: &Value) -> Vec<(String, Value)> {
    v["properties"].as_object().expect("object").iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn extend(base: &Value, more: &[(&str, Value)]) -> Value {
    let owned = props_of(base);
    let mut all: Vec<(&str, Value)> = owned.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    all.extend(more.iter().cloned());
    answer(&all)
}

// Formats the server parses, as patterns (JSON Schema's own formats are not enforced by every
// client, and `mac` is none of them).

/// `aa:bb:cc:dd:ee:ff`, `AA-BB-CC-DD-EE-FF` or `aabbccddeeff`.
pub const MAC: &str = "^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$|^([0-9A-Fa-f]{2}-){5}[0-9A-Fa-f]{2}$|^[0-9A-Fa-f]{12}$";
/// A sha256 digest in lowercase hex.
pub const DIGEST: &str = "^[0-9a-f]{64}$";
/// `parc_profiles::valid_hostname`: 1 to 15 letters, digits and '-', not at either end, not
/// all digits.
const HOSTNAME: &str = "^(?![0-9]+$)[A-Za-z0-9]([A-Za-z0-9-]{0,13}[A-Za-z0-9])?$";
/// Text without control characters (Rust's `char::is_control`).
const NO_CONTROL: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
const SINGLE_LINE: &str = "^[^\\r\\n]*$";

fn text(max: u32) -> Value {
    json!({ "type": "string", "maxLength": max, "pattern": NO_CONTROL })
}

fn mac() -> Value {
    json!({ "type": "string", "pattern": MAC, "description": "aa:bb:cc:dd:ee:ff (also AA-BB-CC-DD-EE-FF or aabbccddeeff)" })
}

const ROLES: &[&str] = &["readonly", "technician", "admin"];
const TASK_KINDS: &[&str] = &["install", "move", "replace", "reimage", "capture"];
const TASK_STATES: &[&str] = &["queued", "running", "done", "failed", "cancelled"];

fn reason() -> Value {
    described(null_or(string()), "why: recorded in the git commit and the journal (one line, 500 characters kept)")
}

/// Every component, answers and requests.
pub fn components() -> Value {
    let mut c = Map::new();
    let mut add = |name: &str, v: Value| {
        c.insert(name.to_string(), v);
    };

    // Errors: `AppError`, and the refusal of one inventory operation (`op` and `machine`).
    add(
        "Error",
        answer_with_optional(
            &[("error", string())],
            &[
                ("field", described(string(), "the request field at fault")),
                ("reason", described(string(), "what is wrong with that field")),
                ("op", string()),
                ("machine", string()),
            ],
        ),
    );
    add("TaskKind", one_of(TASK_KINDS));
    add("TaskState", one_of(TASK_STATES));
    add("Role", one_of(ROLES));
    add(
        "Task",
        answer(&[
            ("id", integer()),
            ("kind", r("TaskKind")),
            ("mac", string()),
            ("state", r("TaskState")),
            ("department", null_or(string())),
            ("image_ref", null_or(string())),
            ("image_digest", null_or(string())),
            ("hostname", null_or(string())),
            ("replaces", null_or(string())),
            ("reason", null_or(string())),
            ("batch", null_or(string())),
            ("commit_id", null_or(string())),
            ("created_by", string()),
            ("created_at", time_ms()),
            ("started_at", null_or(time_ms())),
            ("updated_at", null_or(time_ms())),
            ("finished_at", null_or(time_ms())),
            ("phase", null_or(string())),
            ("bytes_done", count()),
            ("bytes_total", count()),
            ("bytes_fetched", count()),
            ("rate_bps", count()),
            ("message", null_or(string())),
            ("heard_at", null_or(time_ms())),
            ("lost_at", null_or(time_ms())),
        ]),
    );
    add(
        "Event",
        answer(&[
            ("id", integer()),
            ("at", time_ms()),
            ("actor", string()),
            ("kind", string()),
            ("mac", null_or(string())),
            ("task_id", null_or(integer())),
            ("message", string()),
            ("data", described(json!({}), "details, by kind")),
        ]),
    );
    add(
        "Disk",
        answer(&[
            ("name", string()),
            ("size_bytes", count()),
            ("bus", null_or(string())),
            ("removable", boolean()),
            ("serial", null_or(string())),
            ("wwn", null_or(string())),
            ("model", null_or(string())),
        ]),
    );
    add(
        "Commit",
        answer(&[
            ("id", string()),
            ("author_name", string()),
            ("author_email", string()),
            ("time", described(integer(), "author time, Unix seconds")),
            ("summary", string()),
            ("message", string()),
        ]),
    );
    add(
        "Firmware",
        answer(&[
            ("uefi", described(boolean(), "false: legacy BIOS")),
            (
                "secure_boot",
                described(null_or(boolean()), "UEFI Secure Boot; null: not known (BIOS, or variables unreadable)"),
            ),
        ]),
    );
    let machine = answer(&[
        ("mac", string()),
        ("hostname", string()),
        ("department", string()),
        ("serial", string()),
        ("asset_tag", string()),
        ("location", string()),
        ("notes", string()),
        ("status", one_of(super::super::machines::STATUSES)),
        ("in_inventory", boolean()),
        ("etag", described(null_or(string()), "send it back as If-Match to edit")),
        ("model", null_or(string())),
        ("memory_bytes", null_or(count())),
        ("firmware", described(null_or(r("Firmware")), "how it booted the agent last (null: no agent has run on it)")),
        ("ip", null_or(string())),
        ("last_seen", null_or(time_ms())),
        ("image_digest", null_or(string())),
        ("installed_at", null_or(time_ms())),
        ("first_boot_at", null_or(time_ms())),
        ("task", described(null_or(r("Task")), "its latest task")),
    ]);
    add(
        "MachineDetail",
        extend(
            &machine,
            &[
                ("disks", array(r("Disk"))),
                ("tasks", array(r("Task"))),
                ("events", array(r("Event"))),
                ("history", described(array(r("Commit")), "commits that changed its inventory line, newest first")),
            ],
        ),
    );
    add("Machine", machine);
    add(
        "MachineList",
        answer(&[("total", count()), ("offset", count()), ("limit", count()), ("machines", array(r("Machine")))]),
    );
    let outcome = answer_with_optional(
        &[
            ("op", string()),
            ("machine", string()),
            ("ok", boolean()),
            (
                "status",
                described(
                    json!({ "type": "integer", "minimum": 200, "maximum": 599 }),
                    "the status this operation alone would have had",
                ),
            ),
        ],
        &[
            ("mac", string()),
            ("hostname", string()),
            ("task", r("Task")),
            ("summary", string()),
            ("error", string()),
            ("field", string()),
        ],
    );
    let mut result = outcome.clone();
    result["properties"]["commit"] =
        described(null_or(string()), "the inventory commit (null: the operation only queued work)");
    result["required"].as_array_mut().expect("array").push("commit".into());
    add("Outcome", outcome);
    add("OperationResult", result);
    add(
        "Woken",
        answer(&[
            ("ok", boolean()),
            ("op", one_of(&["wake"])),
            ("mac", string()),
            ("hostname", string()),
            ("summary", string()),
        ]),
    );
    add(
        "Granted",
        answer(&[
            ("ok", boolean()),
            ("op", one_of(&["netboot-grant"])),
            ("mac", string()),
            ("address", string()),
            ("minutes", json!({ "type": "integer", "minimum": 1, "maximum": 120 })),
            ("summary", string()),
        ]),
    );
    add("ActionResult", json!({ "anyOf": [r("OperationResult"), r("Woken"), r("Granted")] }));
    add(
        "BatchReport",
        answer(&[
            ("commit", null_or(string())),
            ("batch", null_or(string())),
            ("succeeded", count()),
            ("failed", count()),
            ("results", array(r("Outcome"))),
        ]),
    );
    add(
        "Problem",
        answer(&[
            ("file", string()),
            ("line", null_or(json!({ "type": "integer", "minimum": 0 }))),
            ("reason", string()),
        ]),
    );
    let disk_rule = answer(&[
        ("prefer", array(one_of(&["nvme", "sata", "sas", "virtio", "scsi"]))),
        ("choose", one_of(&["first", "largest", "smallest"])),
        ("min_size", null_or(count())),
        ("grow", json!({ "type": "boolean" })),
    ]);
    add("DiskRule", disk_rule);
    add("Os", one_of(&["linux", "windows"]));
    add("WindowsSettings", answer(&[("time_zone", string()), ("domain_ou", null_or(string()))]));
    add(
        "Department",
        answer(&[
            ("id", string()),
            ("name", string()),
            ("description", string()),
            ("file", string()),
            ("image", string()),
            (
                "image_digest",
                described(null_or(string()), "what the image resolves to now; null when it is not in the store"),
            ),
            ("hostname_pattern", string()),
            ("tags", strings()),
            ("disk", r("DiskRule")),
            ("payloads", strings()),
            ("first_boot", null_or(string())),
            ("os", r("Os")),
            ("windows", null_or(r("WindowsSettings"))),
            ("stale", described(boolean(), "the file at HEAD does not validate: this is its last good version")),
            ("machines", count()),
            ("problems", array(r("Problem"))),
        ]),
    );
    add("Validation", answer(&[("ok", boolean()), ("problems", array(r("Problem")))]));
    add(
        "Profiles",
        answer(&[
            ("commit", string()),
            ("departments", count()),
            ("machines", count()),
            ("inventory_valid_at_head", boolean()),
            ("problems", array(r("Problem"))),
            ("remote", null_or(string())),
            ("last_sync", null_or(string())),
            ("last_sync_error", null_or(string())),
        ]),
    );
    add(
        "ImageName",
        answer(&[
            ("name", string()),
            ("version", json!({ "type": "integer", "minimum": 0, "maximum": u32::MAX })),
            ("digest", json!({ "type": "string", "pattern": DIGEST })),
            ("created", described(count(), "Unix seconds")),
            ("source", described(string(), "what was captured")),
        ]),
    );
    add("Resolved", answer(&[("reference", string()), ("digest", json!({ "type": "string", "pattern": DIGEST }))]));
    add("Removal", answer(&[("removed", strings()), ("kept", strings()), ("overridden", strings())]));
    add(
        "NewToken",
        answer(&[
            ("id", integer()),
            ("token", described(string(), "the secret: shown once")),
            ("user", string()),
            ("role", r("Role")),
            ("name", string()),
            ("expires_at", time_ms()),
        ]),
    );
    add(
        "TokenInfo",
        answer(&[
            ("id", integer()),
            ("user", string()),
            ("name", string()),
            ("created_at", time_ms()),
            ("last_used_at", null_or(time_ms())),
            ("expires_at", null_or(time_ms())),
            ("revoked_at", null_or(time_ms())),
        ]),
    );
    let user = answer(&[
        ("id", integer()),
        ("login", string()),
        ("name", string()),
        ("email", string()),
        ("role", r("Role")),
        ("must_change_password", boolean()),
        ("disabled", boolean()),
        (
            "directory_dn",
            described(null_or(string()), "the account's entry in the hospital's directory; null: a local account"),
        ),
    ]);
    let mut created = user.clone();
    created["properties"]["password"] =
        described(string(), "the generated one-time password, shown once (absent when one was given)");
    add("User", user);
    add("UserCreated", created);
    add("PasswordChanged", answer(&[("ok", boolean()), ("tokens_revoked", count())]));
    add("PasswordReset", answer(&[("login", string()), ("password", string()), ("tokens_revoked", count())]));
    add("DomainJoin", answer(&[("domain", string()), ("machine", string()), ("account_data", string())]));
    add("ImageRef", answer(&[("reference", string()), ("digest", null_or(string()))]));
    add(
        "AgentDepartment",
        answer(&[
            ("id", string()),
            ("name", string()),
            ("image", string()),
            ("hostname_pattern", string()),
            ("disk", r("DiskRule")),
            ("payloads", strings()),
            ("first_boot", null_or(string())),
            ("tags", strings()),
            ("os", r("Os")),
            ("windows", null_or(r("WindowsSettings"))),
        ]),
    );
    add(
        "AgentTask",
        answer(&[
            ("id", integer()),
            ("kind", r("TaskKind")),
            ("mac", string()),
            ("hostname", null_or(string())),
            ("department", null_or(r("AgentDepartment"))),
            ("image", null_or(r("ImageRef"))),
            ("replaces", null_or(string())),
            ("profiles_commit", string()),
            ("disk_serial", null_or(string())),
        ]),
    );
    add(
        "LastTask",
        answer(&[
            ("id", integer()),
            ("kind", r("TaskKind")),
            ("state", r("TaskState")),
            ("reason", string()),
            ("finished_at", time_ms()),
        ]),
    );
    add(
        "HelloReply",
        answer(&[
            ("known", boolean()),
            ("hostname", null_or(string())),
            ("department", null_or(string())),
            ("task", null_or(r("AgentTask"))),
            (
                "session_token",
                described(null_or(string()), "the agent's session from now on; null: keep the one presented"),
            ),
            ("first_boot_token", null_or(string())),
            ("last_task", null_or(r("LastTask"))),
        ]),
    );
    add(
        "ProgressReply",
        answer(&[("continue", described(boolean(), "false: the task was cancelled or has ended, stop"))]),
    );
    add(
        "ProfileFile",
        answer(&[
            ("dest", string()),
            ("source", string()),
            ("mode", json!({ "type": "integer", "minimum": 0, "maximum": 511 })),
            ("size", count()),
        ]),
    );
    add("FirstBoot", answer(&[("ok", boolean()), ("status", one_of(&["ready"]))]));
    add(
        "Document",
        json!({ "type": "object", "required": ["openapi", "info", "paths"], "properties": { "openapi": { "type": "string" } } }),
    );

    let finding = answer(&[
        ("partition", count()),
        ("check", string()),
        ("severity", one_of(&["refuse", "warn"])),
        ("message", described(string(), "what was found and what to do")),
    ]);
    add("Finding", finding);
    add(
        "CaptureStarted",
        answer(&[
            ("accepted", boolean()),
            ("source", string()),
            ("name", string()),
            ("warnings", array(r("Finding"))),
            ("message", string()),
        ]),
    );
    add(
        "CaptureRefused",
        answer(&[
            ("error", string()),
            ("findings", array(r("Finding"))),
            ("table", described(string(), "the findings as the table `parc image capture` prints")),
        ]),
    );

    // Requests.
    add(
        "CaptureRequest",
        request(&[
            ("source", true, described(string(), "a raw disk image's file name in <data>/reference/")),
            (
                "allow_not_generalized",
                false,
                described(boolean(), "capture a Windows sysprep did not generalize: a warning instead of a refusal"),
            ),
        ]),
    );
    add(
        "ImageRemoveRequest",
        request(&[
            (
                "force",
                false,
                described(boolean(), "remove the name anyway; what is pinned stays in the store until nothing pins it"),
            ),
            ("reason", false, reason()),
        ]),
    );
    add(
        "ChunksRequest",
        request(&[(
            "digests",
            true,
            json!({ "type": "array", "minItems": 1, "maxItems": crate::chunks::STREAM_MAX, "items": { "type": "string", "pattern": DIGEST } }),
        )]),
    );
    let single_line = || null_or(json!({ "type": "string", "pattern": SINGLE_LINE }));
    let new_machine = [
        ("mac", true, mac()),
        ("department", true, described(string(), "department id")),
        (
            "hostname",
            false,
            described(
                null_or(json!({ "type": "string", "pattern": format!("^$|{HOSTNAME}") })),
                "default (absent, null or empty): the department's pattern",
            ),
        ),
        ("serial", false, null_or(string())),
        ("asset_tag", false, single_line()),
        ("location", false, single_line()),
        ("notes", false, single_line()),
        ("install", false, described(boolean(), "queue an install too")),
    ];
    let mut add_fields = new_machine.to_vec();
    add_fields.push(("reason", false, reason()));
    add("MachineNew", request(&add_fields));
    let keep = "absent: kept; empty: cleared; null is refused";
    let edit = [
        (
            "hostname",
            false,
            described(json!({ "type": "string", "pattern": HOSTNAME }), "absent: kept; null is refused"),
        ),
        ("serial", false, described(string(), keep)),
        ("asset_tag", false, described(string(), keep)),
        ("location", false, described(string(), keep)),
        ("notes", false, described(string(), keep)),
    ];
    let mut edit_fields = edit.to_vec();
    edit_fields.push(("reason", false, reason()));
    add("MachineEdit", request(&edit_fields));
    add(
        "MachineAction",
        request(&[
            (
                "department",
                false,
                described(null_or(string()), "move: the new department; install: adds an unknown machine"),
            ),
            ("with", false, described(null_or(string()), "replace: MAC of the new machine")),
            ("asset_tag", false, described(null_or(string()), "replace: asset tag of the new machine")),
            ("image", false, described(null_or(string()), "capture: image name")),
            (
                "address",
                false,
                described(
                    null_or(json!({ "type": "string", "format": "ipv4" })),
                    "netboot-grant: the IPv4 address the machine boots from (required there)",
                ),
            ),
            (
                "minutes",
                false,
                described(
                    null_or(json!({ "type": "integer", "minimum": 1, "maximum": 120 })),
                    "netboot-grant: for how long (15)",
                ),
            ),
            ("reason", false, reason()),
        ]),
    );
    // A batch checks the values of each operation on its own: a wrong one fails that
    // operation (status 400 in its result), not the batch. Only types are the batch's.
    let op = |name: &str, fields: &[(&str, bool, Value)]| {
        let mut all = vec![("op", true, one_of(&[name]))];
        all.extend(fields.iter().map(|(n, req, v)| (*n, *req, without_patterns(v.clone()))));
        request(&all)
    };
    let machine_ref = || ("machine", true, described(string(), "MAC or hostname"));
    let mut edit_op =
        vec![machine_ref(), ("if_match", false, described(null_or(string()), "the machine's etag as last seen"))];
    edit_op.extend(edit.iter().cloned());
    add(
        "Operation",
        json!({ "description": "one operation; its values are checked on their own (a wrong one fails this operation, status 400 in its result)", "oneOf": [
            op("add", &new_machine),
            op("install", &[machine_ref(), ("department", false, null_or(string()))]),
            op("reimage", &[machine_ref()]),
            op("move", &[machine_ref(), ("department", true, string())]),
            op("replace", &[machine_ref(), ("with", true, string()), ("asset_tag", false, null_or(string()))]),
            op("retire", &[machine_ref()]),
            op("capture", &[machine_ref(), ("image", true, string())]),
            op("edit", &edit_op),
        ] }),
    );
    add(
        "BatchRequest",
        request(&[
            ("operations", true, json!({ "type": "array", "minItems": 1, "maxItems": 20000, "items": r("Operation") })),
            ("reason", false, reason()),
        ]),
    );
    add("TaskCancelRequest", request(&[("reason", false, reason())]));
    add(
        "DepartmentValidateRequest",
        request(&[
            (
                "file",
                true,
                json!({ "type": "string", "pattern": "^departments/.*\\.toml$", "description": "departments/<id>.toml" }),
            ),
            ("text", true, described(string(), "the file's content")),
        ]),
    );
    let secret_name = json!({ "type": "string", "pattern": "^[a-z0-9_-]{1,64}$", "description": "a-z, 0-9, _ and -" });
    add(
        "SecretRequest",
        request(&[
            ("name", true, secret_name.clone()),
            (
                "value",
                true,
                json!({ "type": "string", "minLength": 1, "maxLength": 65536, "description": "at most 64 KiB of UTF-8" }),
            ),
            ("reason", false, null_or(string())),
        ]),
    );
    add("SecretRemoveRequest", request(&[("reason", false, null_or(string()))]));
    let secret_info =
        answer(&[("name", secret_name.clone()), ("set_by", string()), ("set_at", time_ms()), ("bytes", count())]);
    add("Secrets", json!({ "type": "array", "items": secret_info.clone() }));
    add("SecretInfo", secret_info);
    add("SecretRemoved", answer(&[("name", string()), ("removed", boolean())]));
    add(
        "TokenRequest",
        request(&[
            (
                "name",
                true,
                json!({ "type": "string", "minLength": 1, "maxLength": 100, "description": "what the token is for (not all blank)" }),
            ),
            (
                "expires_in_days",
                false,
                null_or(json!({ "type": "integer", "minimum": 1, "maximum": 365, "description": "90 unless given" })),
            ),
        ]),
    );
    add(
        "PasswordRequest",
        request(&[("new_password", true, json!({ "type": "string", "minLength": 12, "maxLength": 200 }))]),
    );
    add(
        "UserRequest",
        request(&[
            ("login", true, json!({ "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" })),
            (
                "name",
                true,
                json!({ "type": "string", "minLength": 1, "maxLength": 100, "pattern": NO_CONTROL, "description": "git author name (not all blank)" }),
            ),
            (
                "email",
                false,
                described(
                    null_or(
                        json!({ "type": "string", "maxLength": 200, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f<>]*$" }),
                    ),
                    "git author email (login@parc.local)",
                ),
            ),
            ("role", true, r("Role")),
            (
                "password",
                false,
                described(
                    null_or(json!({ "type": "string", "minLength": 12 })),
                    "generated and returned once unless given",
                ),
            ),
        ]),
    );
    let mut patch = request(&[
        ("role", false, null_or(r("Role"))),
        ("disabled", false, null_or(boolean())),
        ("reason", false, reason()),
    ]);
    // At least one of them, not null (null is taken as absent).
    patch["anyOf"] = json!([
        { "required": ["role"], "properties": { "role": r("Role") } },
        { "required": ["disabled"], "properties": { "disabled": boolean() } },
    ]);
    add("UserPatch", patch);
    add(
        "HelloDisk",
        request(&[
            (
                "name",
                true,
                json!({ "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$", "description": "kernel name: nvme0n1, sda" }),
            ),
            ("size_bytes", true, count()),
            ("bus", false, null_or(text(32))),
            ("removable", false, boolean()),
            ("serial", false, null_or(text(128))),
            ("wwn", false, null_or(text(256))),
            ("model", false, null_or(text(200))),
        ]),
    );
    add(
        "Hello",
        request(&[
            ("mac", true, mac()),
            ("serial", false, null_or(text(128))),
            ("uuid", false, null_or(text(64))),
            ("model", false, null_or(text(200))),
            ("memory_bytes", false, count()),
            ("disks", false, json!({ "type": "array", "maxItems": 64, "items": r("HelloDisk") })),
            ("firmware", false, null_or(r("HelloFirmware"))),
        ]),
    );
    add("HelloFirmware", request(&[("uefi", true, boolean()), ("secure_boot", false, null_or(boolean()))]));
    add(
        "ProgressReport",
        request(&[
            ("phase", true, json!({ "type": "string", "minLength": 1, "maxLength": 64 })),
            ("bytes_done", false, count()),
            ("bytes_total", false, count()),
            ("bytes_fetched", false, count()),
            ("rate_bps", false, count()),
            ("message", false, null_or(string())),
        ]),
    );
    add(
        "DoneReport",
        request(&[
            ("verified", true, described(boolean(), "every written chunk was read back and matched")),
            (
                "image_digest",
                true,
                described(string(), "the manifest the machine now holds (deploy) or produced (capture)"),
            ),
            ("bytes_fetched", false, null_or(count())),
            ("disk", false, null_or(string())),
            ("message", false, null_or(string())),
        ]),
    );
    add(
        "FailedReport",
        request(&[
            (
                "reason",
                true,
                json!({ "type": "string", "minLength": 1, "description": "not all blank; 2000 characters kept" }),
            ),
            ("chunk", false, described(null_or(string()), "the chunk that could not be fetched or verified")),
        ]),
    );
    Value::Object(c)
}
