//! `/api/v1/openapi.json`: generated from `ROUTES`, the one list of what the API offers.

mod schemas;

use axum::Json;
use serde_json::{json, Map, Value};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// An API token with at least this role.
    User(&'static str),
    /// A login and password (Basic): creating tokens, changing one's password.
    Password,
    /// The agent's session (from hello).
    Agent,
}

/// A path or query parameter.
#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub ty: Ty,
    /// Query parameters only: path parameters always are.
    pub required: bool,
    pub description: &'static str,
}

/// A parameter's type and the limits the handler enforces.
#[derive(Debug)]
pub enum Ty {
    Text,
    Int(i64, i64),
    /// An unsigned size (offsets).
    Size,
    Bool,
    OneOf(&'static [&'static str]),
}

const fn q(name: &'static str, ty: Ty, description: &'static str) -> Param {
    Param { name, ty, required: false, description }
}

/// The request body: a request schema of `schemas::components()`, by name.
#[derive(Debug)]
pub enum Body {
    None,
    Json(&'static str),
    /// The body may be absent (every field is optional).
    Optional(&'static str),
}

/// What a success answers.
#[derive(Debug)]
pub enum Reply {
    /// 200 with this schema.
    Json(&'static str),
    /// 201 Created with this schema.
    Created(&'static str),
    /// 202 Accepted with this schema: the work goes on in the background.
    Accepted(&'static str),
    /// 200 with bytes of this content type.
    Bytes(&'static str),
    /// 200, a server-sent event stream.
    Events,
}

#[derive(Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// Path parameters (a path parameter not listed is any string) and query parameters.
    pub params: &'static [Param],
    pub body: Body,
    pub reply: Reply,
    /// Status codes besides the success and those `codes` adds for the route's kind.
    pub errors: &'static [u16],
}

use Access::{Agent, Password, Public, User};
use Body::{Json as JsonBody, Optional};
use Reply::{Accepted, Bytes, Created, Events, Json as Answer};

const RO: Access = User("readonly");
const TECH: Access = User("technician");
const ADMIN: Access = User("admin");
const NONE: Body = Body::None;

const LIMIT_1000: Param = q("limit", Ty::Int(1, 1000), "rows, 1 to 1000 (100)");
const LIMIT_10000: Param = q("limit", Ty::Int(1, 10_000), "rows, 1 to 10000 (100)");
const ID64: Ty = Ty::Int(i64::MIN, i64::MAX);
const TASK_ID: Param = Param { name: "id", ty: ID64, required: true, description: "task number (also written #12)" };
const MACHINE_ID: Param = Param { name: "id", ty: Ty::Text, required: true, description: "MAC or hostname" };
const ACTIONS: &[&str] = &["install", "reimage", "move", "replace", "retire", "capture", "wake", "netboot-grant"];

pub const ROUTES: &[Route] = &[
    Route { method: "get", path: "/openapi.json", tag: "meta", summary: "This document", access: Public, params: &[], body: NONE, reply: Answer("Document"), errors: &[] },
    Route { method: "get", path: "/images", tag: "images", summary: "Image names and versions in the store", access: RO, params: &[], body: NONE, reply: Answer("ImageNames"), errors: &[] },
    Route { method: "get", path: "/images/{reference}", tag: "images", summary: "Resolve name, name@version or digest prefix to a manifest digest (a technician's token, or the agent session of a task deploying it)", access: RO, params: &[], body: NONE, reply: Answer("Resolved"), errors: &[400, 404] },
    Route { method: "post", path: "/images/{reference}/remove", tag: "images", summary: "Remove an image name (name@version: one version; name: all); refused (409, naming them) while a department names it or an active task deploys it, unless force. Journaled", access: ADMIN,
        params: &[], body: Optional("ImageRemoveRequest"), reply: Answer("Removal"), errors: &[404, 409] },
    Route { method: "post", path: "/images/{reference}/capture", tag: "images", summary: "Capture a raw disk image kept on the appliance (<data>/reference/SOURCE: a reference PC built as a virtual machine) as a new version of this image name: the pre-flight gate first (422 with the findings, as data and as a table, when it refuses: hibernated, Fast Startup, dirty, BitLocker, not generalized…), then the capture in the background, ending in the journal (image.capture or image.capture.failed). Journaled", access: ADMIN,
        params: &[], body: JsonBody("CaptureRequest"), reply: Accepted("CaptureStarted"), errors: &[404, 422] },
    Route { method: "post", path: "/chunks", tag: "images", summary: "Many chunks in one response: frames of digest (32 bytes), length (u32 BE), stored zstd bytes (a technician's token or a running task's agent session)", access: RO,
        params: &[], body: JsonBody("ChunksRequest"), reply: Bytes("application/x-parc-chunks"), errors: &[404] },
    Route { method: "get", path: "/machines", tag: "machines", summary: "Machines (inventory and discovered), filtered and paged", access: RO, body: NONE, reply: Answer("MachineList"),
        params: &[q("q", Ty::Text, "free text: MAC, hostname, serial, asset tag, location, model"), q("department", Ty::Text, "department id"),
                 q("status", Ty::OneOf(super::machines::STATUSES), "machine status"),
                 q("image", Ty::Text, "manifest digest prefix"), q("model", Ty::Text, "exact model"), q("location", Ty::Text, "substring"),
                 q("offset", Ty::Size, "first row"), LIMIT_1000], errors: &[] },
    Route { method: "post", path: "/machines", tag: "machines", summary: "Add a machine to the inventory (a git commit by the caller)", access: TECH,
        params: &[], body: JsonBody("MachineNew"), reply: Created("OperationResult"), errors: &[404, 409] },
    Route { method: "get", path: "/machines/{id}", tag: "machines", summary: "One machine by MAC or hostname: inventory, hardware, tasks, journal, git history (ETag header)", access: RO, params: &[MACHINE_ID], body: NONE, reply: Answer("MachineDetail"), errors: &[404] },
    Route { method: "patch", path: "/machines/{id}", tag: "machines", summary: "Edit inventory fields; send If-Match with the ETag to detect concurrent edits (409)", access: TECH,
        params: &[MACHINE_ID], body: JsonBody("MachineEdit"), reply: Answer("OperationResult"), errors: &[404, 409] },
    Route { method: "post", path: "/machines/{id}/{action}", tag: "machines", summary: "install | reimage | move | replace | retire | capture: one inventory commit and one queued task; wake: a Wake-on-LAN packet; netboot-grant: allow the machine (or any MAC) a boot credential from one address for a few minutes, where parc sees no DHCP or TFTP of it (journaled, no commit)", access: TECH,
        params: &[MACHINE_ID, Param { name: "action", ty: Ty::OneOf(ACTIONS), required: true, description: "what to do (404 for another)" }],
        body: Optional("MachineAction"), reply: Answer("ActionResult"), errors: &[404, 409] },
    Route { method: "get", path: "/machines/{id}/secrets", tag: "machines", summary: "The machine's secrets, by name (never their values)", access: ADMIN,
        params: &[MACHINE_ID], body: NONE, reply: Answer("Secrets"), errors: &[404] },
    Route { method: "post", path: "/machines/{id}/secrets", tag: "machines", summary: "Set or replace a secret of an inventory machine (a domain-join credential…): kept in the appliance's database, never in git, an image or the journal; delivered only to the machine's running task, in the profile files that contain @@parc-secret:NAME@@. Journaled by name", access: ADMIN,
        params: &[MACHINE_ID], body: JsonBody("SecretRequest"), reply: Answer("SecretInfo"), errors: &[404] },
    Route { method: "post", path: "/machines/{id}/secrets/{name}/remove", tag: "machines", summary: "Remove a secret of the machine. Journaled", access: ADMIN,
        params: &[MACHINE_ID, Param { name: "name", ty: Ty::Text, required: true, description: "secret name" }], body: Optional("SecretRemoveRequest"), reply: Answer("SecretRemoved"), errors: &[404] },
    Route { method: "post", path: "/batch", tag: "machines", summary: "Many operations ({op: add|install|reimage|move|replace|retire|capture|edit, machine, …}) in one commit, one result per operation", access: TECH,
        params: &[], body: JsonBody("BatchRequest"), reply: Answer("BatchReport"), errors: &[] },
    Route { method: "get", path: "/tasks", tag: "tasks", summary: "Tasks, newest first", access: RO, body: NONE, reply: Answer("Tasks"),
        params: &[q("state", Ty::OneOf(&["queued", "running", "done", "failed", "cancelled"]), "tasks in this state"), q("active", Ty::Bool, "queued and running only"), q("machine", Ty::Text, "MAC or hostname"),
                 q("batch", Ty::Text, "batch id"), q("before", ID64, "ids below this"), LIMIT_10000], errors: &[404] },
    Route { method: "get", path: "/tasks/{id}", tag: "tasks", summary: "One task with its progress", access: RO, params: &[TASK_ID], body: NONE, reply: Answer("Task"), errors: &[404] },
    Route { method: "post", path: "/tasks/{id}/cancel", tag: "tasks", summary: "Cancel a queued or running task", access: TECH, params: &[TASK_ID], body: Optional("TaskCancelRequest"), reply: Answer("Task"), errors: &[404, 409] },
    Route { method: "get", path: "/departments", tag: "departments", summary: "Departments parsed from git, with problems (file, line, reason)", access: RO, params: &[], body: NONE, reply: Answer("Departments"), errors: &[] },
    Route { method: "post", path: "/departments/validate", tag: "departments", summary: "Validate a department file against HEAD and the store without committing", access: RO,
        params: &[], body: JsonBody("DepartmentValidateRequest"), reply: Answer("Validation"), errors: &[] },
    Route { method: "get", path: "/departments/{id}", tag: "departments", summary: "One department", access: RO, params: &[], body: NONE, reply: Answer("Department"), errors: &[404] },
    Route { method: "get", path: "/profiles", tag: "departments", summary: "Profiles repository: commit, problems, remote and last pull", access: RO, params: &[], body: NONE, reply: Answer("Profiles"), errors: &[] },
    Route { method: "post", path: "/profiles/reload", tag: "departments", summary: "Pull from the remote (if any) and re-read HEAD now", access: TECH, params: &[], body: NONE, reply: Answer("Profiles"), errors: &[] },
    Route { method: "get", path: "/events", tag: "journal", summary: "The audit journal, newest first", access: RO, body: NONE, reply: Answer("Events"),
        params: &[q("after", ID64, "ids above this"), q("machine", Ty::Text, "MAC or hostname"), q("task", ID64, "task id"), q("actor", Ty::Text, "login, agent or parc"),
                 q("kind", Ty::Text, "kind prefix: machine., task., agent., user."), LIMIT_10000], errors: &[] },
    Route { method: "get", path: "/events/stream", tag: "journal", summary: "Server-sent events: journal entries (event: event) and progress reports (event: progress); event: lagged (data: how many were missed) when the reader fell behind", access: RO, params: &[], body: NONE, reply: Events, errors: &[] },
    Route { method: "post", path: "/tokens", tag: "access", summary: "Create an API token for the caller: Basic login:password only (throttled per login and address; refused while the password must be changed; a directory account in no parc group gets 403, and 503 while the directory is unreachable). Journaled", access: Password,
        params: &[], body: JsonBody("TokenRequest"), reply: Created("NewToken"), errors: &[403] },
    Route { method: "get", path: "/tokens", tag: "access", summary: "The caller's API tokens (all=true: everyone's, admins), never their secrets", access: RO,
        params: &[q("all", Ty::Bool, "every user's tokens (admin)")], body: NONE, reply: Answer("Tokens"), errors: &[] },
    Route { method: "post", path: "/tokens/{id}/revoke", tag: "access", summary: "Revoke a token (one's own, or anyone's for an admin). Journaled", access: RO,
        params: &[Param { name: "id", ty: ID64, required: true, description: "token id" }], body: NONE, reply: Answer("TokenInfo"), errors: &[404, 409] },
    Route { method: "post", path: "/password", tag: "access", summary: "Change the caller's password: Basic login:current-password; every token and console session of the user ends. Journaled", access: Password,
        params: &[], body: JsonBody("PasswordRequest"), reply: Answer("PasswordChanged"), errors: &[409] },
    Route { method: "get", path: "/users", tag: "access", summary: "Users", access: ADMIN, params: &[], body: NONE, reply: Answer("Users"), errors: &[] },
    Route { method: "post", path: "/users", tag: "access", summary: "Create a user; a password is generated and returned once unless given", access: ADMIN,
        params: &[], body: JsonBody("UserRequest"), reply: Created("UserCreated"), errors: &[409] },
    Route { method: "patch", path: "/users/{login}", tag: "access", summary: "Change a user's role or disable/enable it (disabling ends its tokens and sessions). Journaled", access: ADMIN,
        params: &[], body: JsonBody("UserPatch"), reply: Answer("User"), errors: &[404, 409] },
    Route { method: "post", path: "/users/{login}/reset-password", tag: "access", summary: "Reset a user's password: a one-time password returned once, to change at next login; its tokens and sessions end. Journaled", access: ADMIN,
        params: &[], body: NONE, reply: Answer("PasswordReset"), errors: &[404, 409, 429] },
    Route { method: "post", path: "/agent/hello", tag: "agent", summary: "An agent reports its machine (MAC, SMBIOS serial/UUID/model, disks, memory; every field bounded, body at most 64 KiB). With the boot credential of its boot script (single use, from the address it was issued to) or its standby session: session_token (the task's session, or a standby one), the task and first_boot_token, or last_task (id, kind, state, reason, finished_at) after a failed or cancelled deployment. Without one: an unknown machine's hardware is recorded, nothing is told. 30 a minute per address", access: Public,
        params: &[], body: JsonBody("Hello"), reply: Answer("HelloReply"), errors: &[401, 409, 429] },
    Route { method: "get", path: "/agent/task", tag: "agent", summary: "The agent's task", access: Agent, params: &[], body: NONE, reply: Answer("AgentTask"), errors: &[409] },
    Route { method: "post", path: "/agent/progress", tag: "agent", summary: "Progress report (at least every 2 s); answers continue=false when cancelled, 409 when the task was failed because its agent was silent (journaled as agent.late)", access: Agent,
        params: &[], body: JsonBody("ProgressReport"), reply: Answer("ProgressReply"), errors: &[409] },
    Route { method: "post", path: "/agent/done", tag: "agent", summary: "Task finished; refused (and the task failed) unless verified and the digest is the task's", access: Agent,
        params: &[], body: JsonBody("DoneReport"), reply: Answer("Task"), errors: &[409] },
    Route { method: "post", path: "/agent/failed", tag: "agent", summary: "Task failed, with the reason (and the chunk at fault)", access: Agent,
        params: &[], body: JsonBody("FailedReport"), reply: Answer("Task"), errors: &[409] },
    Route { method: "get", path: "/agent/files", tag: "agent", summary: "The department profile's files for the installed system (dest, source, mode, size), at the commit the task was queued with, while it runs", access: Agent, params: &[], body: NONE, reply: Answer("ProfileFiles"), errors: &[409] },
    Route { method: "get", path: "/agent/file", tag: "agent", summary: "One profile file's bytes", access: Agent,
        params: &[Param { name: "path", ty: Ty::Text, required: true, description: "source path from /agent/files" }], body: NONE, reply: Bytes("application/octet-stream"), errors: &[404, 409] },
    Route { method: "post", path: "/agent/domain-join", tag: "agent", summary: "The machine's offline domain join: its computer account provisioned now (created, or reused when parc made it for this machine or the one it replaces) and the blob for the answer file, in this answer only", access: Agent, params: &[], body: NONE, reply: Answer("DomainJoin"), errors: &[409] },
    Route { method: "post", path: "/agent/first-boot", tag: "agent", summary: "The installed system booted: the machine is ready. Its own single-use credential (first_boot_token of hello), not the agent's session", access: Public, params: &[], body: NONE, reply: Answer("FirstBoot"), errors: &[401, 409] },
];

/// Lists answered as arrays of a component.
const LISTS: &[(&str, &str)] = &[
    ("ImageNames", "ImageName"),
    ("Tasks", "Task"),
    ("Departments", "Department"),
    ("Events", "Event"),
    ("Tokens", "TokenInfo"),
    ("Users", "User"),
    ("ProfileFiles", "ProfileFile"),
];

fn reason(code: u16) -> &'static str {
    match code {
        400 => "invalid request (a malformed or mistyped body, an unknown field, a value out of range): the error names the field",
        401 => "missing or wrong credentials",
        403 => "the caller's role does not allow this",
        404 => "unknown machine, task, department or image",
        409 => "conflict with the current state; the error says which",
        422 => "refused by a check before anything was done: the findings say why and what to do",
        413 => "request body too large",
        429 => "too many requests: wait and try again",
        500 => "internal fault: the details are in the appliance's log",
        503 => "the request took too long; try again",
        _ => "error",
    }
}

impl Ty {
    fn schema(&self) -> Value {
        match self {
            Ty::Text => json!({ "type": "string" }),
            Ty::Int(lo, hi) => json!({ "type": "integer", "minimum": lo, "maximum": hi }),
            Ty::Size => json!({ "type": "integer", "minimum": 0, "maximum": u64::MAX }),
            Ty::Bool => json!({ "type": "boolean" }),
            Ty::OneOf(values) => json!({ "type": "string", "enum": values }),
        }
    }
}

/// Every status code a route can answer besides its success.
fn codes(r: &Route) -> Vec<u16> {
    let mut codes: Vec<u16> = r.errors.to_vec();
    match r.access {
        Access::Public => {}
        Access::User(_) => codes.extend([401, 403]),
        Access::Password => codes.extend([401, 429]),
        Access::Agent => codes.push(401),
    }
    if !matches!(r.body, Body::None) {
        codes.extend([400, 413]);
    }
    if r.params.iter().any(|p| !matches!(p.ty, Ty::Text) || !r.path.contains(&format!("{{{}}}", p.name))) {
        // A mistyped value, or a query parameter the route does not know.
        codes.push(400);
    }
    codes.extend([500, 503]);
    codes.sort_unstable();
    codes.dedup();
    codes
}

pub fn spec() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let in_path: Vec<&str> = r.path.split('/').filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}')).collect();
        let mut params: Vec<Value> = in_path
            .iter()
            .map(|name| match r.params.iter().find(|p| p.name == *name) {
                Some(p) => json!({ "name": name, "in": "path", "required": true, "description": p.description, "schema": p.ty.schema() }),
                None => json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }),
            })
            .collect();
        params.extend(r.params.iter().filter(|p| !in_path.contains(&p.name)).map(|p| {
            json!({ "name": p.name, "in": "query", "required": p.required, "description": p.description, "schema": p.ty.schema() })
        }));
        let mut responses = Map::new();
        let (status, description, content) = match r.reply {
            Answer(name) => ("200", "success", json!({ "application/json": { "schema": schemas::r(name) } })),
            Created(name) => ("201", "created", json!({ "application/json": { "schema": schemas::r(name) } })),
            Accepted(name) => (
                "202",
                "accepted: it goes on in the background",
                json!({ "application/json": { "schema": schemas::r(name) } }),
            ),
            Bytes(ty) => ("200", "success", json!({ ty: { "schema": { "type": "string", "format": "binary" } } })),
            Events => (
                "200",
                "a stream that lasts as long as the connection",
                json!({ "text/event-stream": { "schema": { "type": "string" } } }),
            ),
        };
        let mut success = json!({ "description": description, "content": content });
        if r.method == "get" && r.path == "/machines/{id}" {
            success["headers"] = json!({ "ETag": { "description": "the inventory row's etag (machines in the inventory only)", "schema": { "type": "string" } } });
        }
        responses.insert(status.into(), success);
        for c in codes(r) {
            let schema = if c == 422 { "CaptureRefused" } else { "Error" };
            responses.insert(c.to_string(), json!({ "description": reason(c), "content": { "application/json": { "schema": schemas::r(schema) } } }));
        }
        let mut op = json!({
            "tags": [r.tag],
            "summary": r.summary,
            "operationId": format!("{}{}", r.method, r.path.replace(['/', '{', '}', '.', '-'], "_")),
            "parameters": params,
            "responses": responses,
        });
        match r.access {
            Access::Public => op["security"] = json!([]),
            Access::User(role) => {
                op["security"] = json!([{ "token": [] }]);
                op["x-parc-role"] = role.into();
            }
            Access::Password => op["security"] = json!([{ "password": [] }]),
            Access::Agent => op["security"] = json!([{ "agentToken": [] }]),
        }
        if r.method == "patch" && r.path == "/machines/{id}" {
            op["parameters"].as_array_mut().expect("array").push(json!({ "name": "If-Match", "in": "header", "required": false, "description": "the etag last seen: 409 when the machine changed since", "schema": { "type": "string" } }));
        }
        match r.body {
            Body::None => {}
            JsonBody(name) | Optional(name) => {
                op["requestBody"] = json!({
                    "required": matches!(r.body, JsonBody(_)),
                    "content": { "application/json": { "schema": schemas::r(name) } }
                });
            }
        }
        paths.entry(format!("/api/v1{}", r.path)).or_insert_with(|| json!({}))[r.method] = op;
    }
    let mut components = schemas::components();
    for (list, item) in LISTS {
        components[*list] = json!({ "type": "array", "items": schemas::r(item) });
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "parc appliance API", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Machines, departments, images, tasks and the journal of a parc imaging appliance. Errors are {\"error\": message} (and \"field\" for invalid fields). Request bodies are JSON: a body that does not parse, has a field of the wrong type or one the route does not know is a 400 naming it." },
        "servers": [{ "url": "/" }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "token": { "type": "http", "scheme": "bearer", "description": "API token (POST /api/v1/tokens)" },
                "password": { "type": "http", "scheme": "basic", "description": "login and password: only to create tokens and change the password" },
                "agentToken": { "type": "http", "scheme": "bearer", "description": "the agent's session, from hello with the boot script's credential (parc.token=)" }
            },
            "schemas": components
        }
    })
}

pub async fn document() -> Json<Value> {
    Json(spec())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    /// Every documented operation reaches a handler: axum's own "no route" answers are a 404
    /// or 405 with an empty body, ours always carry a JSON error.
    #[tokio::test]
    async fn every_documented_route_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _) = crate::AppState::open(dir.path(), None).unwrap();
        let app = crate::app(state);
        for r in ROUTES {
            let path = format!("/api/v1{}", r.path)
                .replace("{id}", "x")
                .replace("{reference}", "x")
                .replace("{action}", "move");
            let req = Request::builder()
                .method(Method::from_bytes(r.method.to_uppercase().as_bytes()).unwrap())
                .uri(&path)
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED && !(status == StatusCode::NOT_FOUND && body.is_empty()),
                "{} {path} is documented but not routed ({status})",
                r.method
            );
        }
        let doc = spec();
        assert_eq!(
            doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum::<usize>(),
            ROUTES.len()
        );
    }
}
