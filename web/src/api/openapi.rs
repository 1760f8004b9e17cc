//! `/api/v1/openapi.json`: generated from `ROUTES`, the one list of what the API offers.

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

#[derive(Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// JSON body fields: (name, type, required, description).
    pub body: &'static [(&'static str, &'static str, bool, &'static str)],
    /// Query parameters: (name, type, description).
    pub query: &'static [(&'static str, &'static str, &'static str)],
    /// Status codes besides 200 and the auth errors.
    pub errors: &'static [u16],
}

use Access::{Agent, Password, Public, User};

const RO: Access = User("readonly");
const TECH: Access = User("technician");
const ADMIN: Access = User("admin");
const REASON: (&str, &str, bool, &str) = ("reason", "string", false, "why: recorded in the git commit and the journal");

/// POST routes that answer 201 Created.
const CREATED: &[&str] = &["/machines", "/tokens", "/users"];

pub const ROUTES: &[Route] = &[
    Route { method: "get", path: "/openapi.json", tag: "meta", summary: "This document", access: Public, body: &[], query: &[], errors: &[] },
    Route { method: "get", path: "/images", tag: "images", summary: "Image names and versions in the store", access: RO, body: &[], query: &[], errors: &[] },
    Route { method: "get", path: "/images/{reference}", tag: "images", summary: "Resolve name, name@version or digest prefix to a manifest digest (a technician's token, or the agent session of a task deploying it)", access: RO, body: &[], query: &[], errors: &[400, 403, 404] },
    Route { method: "post", path: "/images/{reference}/remove", tag: "images", summary: "Remove an image name (name@version: one version; name: all); refused (409, naming them) while a department names it or an active task deploys it, unless force. Journaled", access: ADMIN,
        body: &[("force", "boolean", false, "remove the name anyway; what is pinned stays in the store until nothing pins it"), REASON], query: &[], errors: &[400, 404, 409] },
    Route { method: "post", path: "/chunks", tag: "images", summary: "Many chunks in one response: frames of digest (32 bytes), length (u32 BE), stored zstd bytes (a technician's token or a running task's agent session)", access: RO,
        body: &[("digests", "array", true, "1 to 1024 sha256 hex digests")], query: &[], errors: &[400, 404] },
    Route { method: "get", path: "/machines", tag: "machines", summary: "Machines (inventory and discovered), filtered and paged", access: RO, body: &[],
        query: &[("q", "string", "free text: MAC, hostname, serial, asset tag, location, model"), ("department", "string", "department id"),
                 ("status", "string", "new, discovered, queued, installing, capturing, installed, ready, failed, retired"),
                 ("image", "string", "manifest digest prefix"), ("model", "string", "exact model"), ("location", "string", "substring"),
                 ("offset", "integer", "first row"), ("limit", "integer", "rows, 1 to 1000 (100)")], errors: &[400] },
    Route { method: "post", path: "/machines", tag: "machines", summary: "Add a machine to the inventory (a git commit by the caller)", access: TECH,
        body: &[("mac", "string", true, "aa:bb:cc:dd:ee:ff"), ("department", "string", true, "department id"), ("hostname", "string", false, "default: the department's pattern"),
                ("serial", "string", false, ""), ("asset_tag", "string", false, ""), ("location", "string", false, ""), ("notes", "string", false, ""),
                ("install", "boolean", false, "queue an install too"), REASON], query: &[], errors: &[400, 409] },
    Route { method: "get", path: "/machines/{id}", tag: "machines", summary: "One machine by MAC or hostname: inventory, hardware, tasks, journal, git history (ETag header)", access: RO, body: &[], query: &[], errors: &[404] },
    Route { method: "patch", path: "/machines/{id}", tag: "machines", summary: "Edit inventory fields; send If-Match with the ETag to detect concurrent edits (409)", access: TECH,
        body: &[("hostname", "string", false, ""), ("serial", "string", false, ""), ("asset_tag", "string", false, ""), ("location", "string", false, ""), ("notes", "string", false, ""), REASON],
        query: &[], errors: &[400, 404, 409] },
    Route { method: "post", path: "/machines/{id}/{action}", tag: "machines", summary: "install | reimage | move | replace | retire | capture: one inventory commit and one queued task; wake: a Wake-on-LAN packet; netboot-grant: allow the machine (or any MAC) a boot credential from one address for a few minutes, where parc sees no DHCP or TFTP of it (journaled, no commit)", access: TECH,
        body: &[("department", "string", false, "move: the new department; install: adds an unknown machine"), ("with", "string", false, "replace: MAC of the new machine"),
                ("address", "string", false, "netboot-grant: the IPv4 address the machine boots from"), ("minutes", "integer", false, "netboot-grant: 1 to 120 (15)"),
                ("asset_tag", "string", false, "replace: asset tag of the new machine"), ("image", "string", false, "capture: image name"), REASON],
        query: &[], errors: &[400, 404, 409] },
    Route { method: "post", path: "/batch", tag: "machines", summary: "Many operations ({op: add|install|reimage|move|replace|retire|capture|edit, machine, …}) in one commit, one result per operation", access: TECH,
        body: &[("operations", "array", true, "operations, each an object with op and its fields"), REASON], query: &[], errors: &[400] },
    Route { method: "get", path: "/tasks", tag: "tasks", summary: "Tasks, newest first", access: RO, body: &[],
        query: &[("state", "string", "queued, running, done, failed, cancelled"), ("active", "boolean", "queued and running only"), ("machine", "string", "MAC or hostname"),
                 ("batch", "string", "batch id"), ("before", "integer", "ids below this"), ("limit", "integer", "1 to 10000 (100)")], errors: &[400, 404] },
    Route { method: "get", path: "/tasks/{id}", tag: "tasks", summary: "One task with its progress", access: RO, body: &[], query: &[], errors: &[400, 404] },
    Route { method: "post", path: "/tasks/{id}/cancel", tag: "tasks", summary: "Cancel a queued or running task", access: TECH, body: &[REASON], query: &[], errors: &[404, 409] },
    Route { method: "get", path: "/departments", tag: "departments", summary: "Departments parsed from git, with problems (file, line, reason)", access: RO, body: &[], query: &[], errors: &[] },
    Route { method: "post", path: "/departments/validate", tag: "departments", summary: "Validate a department file against HEAD and the store without committing", access: RO,
        body: &[("file", "string", true, "departments/<id>.toml"), ("text", "string", true, "file content")], query: &[], errors: &[400] },
    Route { method: "get", path: "/departments/{id}", tag: "departments", summary: "One department", access: RO, body: &[], query: &[], errors: &[404] },
    Route { method: "get", path: "/profiles", tag: "departments", summary: "Profiles repository: commit, problems, remote and last pull", access: RO, body: &[], query: &[], errors: &[] },
    Route { method: "post", path: "/profiles/reload", tag: "departments", summary: "Pull from the remote (if any) and re-read HEAD now", access: TECH, body: &[], query: &[], errors: &[] },
    Route { method: "get", path: "/events", tag: "journal", summary: "The audit journal, newest first", access: RO, body: &[],
        query: &[("after", "integer", "ids above this"), ("machine", "string", "MAC or hostname"), ("task", "integer", "task id"), ("actor", "string", "login, agent or parc"),
                 ("kind", "string", "kind prefix: machine., task., agent., user."), ("limit", "integer", "1 to 10000 (100)")], errors: &[400] },
    Route { method: "get", path: "/events/stream", tag: "journal", summary: "Server-sent events: journal entries (event: event) and progress reports (event: progress)", access: RO, body: &[], query: &[], errors: &[] },
    Route { method: "post", path: "/tokens", tag: "access", summary: "Create an API token for the caller: Basic login:password only (throttled per login and address; refused while the password must be changed). Journaled", access: Password,
        body: &[("name", "string", true, "what the token is for"), ("expires_in_days", "integer", false, "1 to 365 (90)")], query: &[], errors: &[400, 401, 403, 429] },
    Route { method: "get", path: "/tokens", tag: "access", summary: "The caller's API tokens (all=true: everyone's, admins), never their secrets", access: RO, body: &[],
        query: &[("all", "boolean", "every user's tokens (admin)")], errors: &[400] },
    Route { method: "post", path: "/tokens/{id}/revoke", tag: "access", summary: "Revoke a token (one's own, or anyone's for an admin). Journaled", access: RO, body: &[], query: &[], errors: &[404, 409] },
    Route { method: "post", path: "/password", tag: "access", summary: "Change the caller's password: Basic login:current-password; every token and console session of the user ends. Journaled", access: Password,
        body: &[("new_password", "string", true, "12 to 200 characters")], query: &[], errors: &[400, 401, 429] },
    Route { method: "get", path: "/users", tag: "access", summary: "Users", access: ADMIN, body: &[], query: &[], errors: &[] },
    Route { method: "post", path: "/users", tag: "access", summary: "Create a user; a password is generated and returned once unless given", access: ADMIN,
        body: &[("login", "string", true, ""), ("name", "string", true, "git author name"), ("email", "string", false, "git author email"),
                ("role", "string", true, "admin, technician or readonly"), ("password", "string", false, "at least 12 characters")], query: &[], errors: &[400, 409] },
    Route { method: "patch", path: "/users/{login}", tag: "access", summary: "Change a user's role or disable/enable it (disabling ends its tokens and sessions). Journaled", access: ADMIN,
        body: &[("role", "string", false, "admin, technician or readonly"), ("disabled", "boolean", false, ""), REASON], query: &[], errors: &[400, 404, 409] },
    Route { method: "post", path: "/users/{login}/reset-password", tag: "access", summary: "Reset a user's password: a one-time password returned once, to change at next login; its tokens and sessions end. Journaled", access: ADMIN,
        body: &[], query: &[], errors: &[404] },
    Route { method: "post", path: "/agent/hello", tag: "agent", summary: "An agent reports its machine (MAC, SMBIOS serial/UUID/model, disks, memory; every field bounded, body at most 64 KiB). With the boot credential of its boot script (single use, from the address it was issued to) or its standby session: session_token (the task's session, or a standby one), the task and first_boot_token, or last_task (id, kind, state, reason, finished_at) after a failed or cancelled deployment. Without one: an unknown machine's hardware is recorded, nothing is told. 30 a minute per address", access: Public,
        body: &[("mac", "string", true, ""), ("serial", "string", false, ""), ("uuid", "string", false, ""), ("model", "string", false, ""), ("memory_bytes", "integer", false, ""),
                ("disks", "array", false, "name, size_bytes, bus, removable, serial, wwn, model")], query: &[], errors: &[400, 401, 409, 413, 429] },
    Route { method: "get", path: "/agent/task", tag: "agent", summary: "The agent's task", access: Agent, body: &[], query: &[], errors: &[409] },
    Route { method: "post", path: "/agent/progress", tag: "agent", summary: "Progress report (at least every 2 s); answers continue=false when cancelled, 409 when the task was failed because its agent was silent (journaled as agent.late)", access: Agent,
        body: &[("phase", "string", true, ""), ("bytes_done", "integer", false, ""), ("bytes_total", "integer", false, ""), ("bytes_fetched", "integer", false, ""),
                ("rate_bps", "integer", false, ""), ("message", "string", false, "")], query: &[], errors: &[400, 409] },
    Route { method: "post", path: "/agent/done", tag: "agent", summary: "Task finished; refused (and the task failed) unless verified and the digest is the task's", access: Agent,
        body: &[("verified", "boolean", true, ""), ("image_digest", "string", true, ""), ("bytes_fetched", "integer", false, ""), ("disk", "string", false, ""), ("message", "string", false, "")],
        query: &[], errors: &[409] },
    Route { method: "post", path: "/agent/failed", tag: "agent", summary: "Task failed, with the reason (and the chunk at fault)", access: Agent,
        body: &[("reason", "string", true, ""), ("chunk", "string", false, "")], query: &[], errors: &[400, 409] },
    Route { method: "get", path: "/agent/files", tag: "agent", summary: "The department profile's files for the installed system (dest, source, mode, size), at the commit the task was queued with, while it runs", access: Agent, body: &[], query: &[], errors: &[409] },
    Route { method: "get", path: "/agent/file", tag: "agent", summary: "One profile file's bytes", access: Agent, body: &[],
        query: &[("path", "string", "source path from /agent/files")], errors: &[404, 409] },
    Route { method: "post", path: "/agent/first-boot", tag: "agent", summary: "The installed system booted: the machine is ready. Its own single-use credential (first_boot_token of hello), not the agent's session", access: Public, body: &[], query: &[], errors: &[401, 409] },
];

fn reason(code: u16) -> &'static str {
    match code {
        400 => "invalid request: the error names the field",
        401 => "missing or wrong credentials",
        403 => "the caller's role does not allow this",
        404 => "unknown machine, task, department or image",
        409 => "conflict with the current state; the error says which",
        413 => "request body too large",
        429 => "too many requests: wait and try again",
        _ => "error",
    }
}

pub fn spec() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let mut params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        params.extend(r.query.iter().map(|(name, ty, desc)| {
            json!({ "name": name, "in": "query", "required": false, "description": desc, "schema": { "type": ty } })
        }));
        let mut responses = Map::new();
        // What the handlers answer on success: 201 where they create, an event stream for the
        // live journal.
        let created = r.method == "post" && CREATED.contains(&r.path);
        let content = if r.path == "/events/stream" { "text/event-stream" } else { "application/json" };
        responses.insert(
            (if created { "201" } else { "200" }).into(),
            json!({ "description": if created { "created" } else { "success" }, "content": { content: {} } }),
        );
        let mut codes: Vec<u16> = r.errors.to_vec();
        match r.access {
            Access::Public => {}
            Access::User(_) => codes.extend([401, 403]),
            Access::Password | Access::Agent => codes.push(401),
        }
        codes.sort_unstable();
        codes.dedup();
        for c in codes {
            responses.insert(c.to_string(), json!({ "description": reason(c), "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }));
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
        if !r.body.is_empty() {
            let mut props = Map::new();
            let mut required = Vec::new();
            for (name, ty, req, desc) in r.body {
                props.insert(name.to_string(), json!({ "type": ty, "description": desc }));
                if *req {
                    required.push(*name);
                }
            }
            op["requestBody"] = json!({
                "required": !required.is_empty(),
                "content": { "application/json": { "schema": { "type": "object", "properties": props, "required": required } } }
            });
        }
        paths.entry(format!("/api/v1{}", r.path)).or_insert_with(|| json!({}))[r.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "parc appliance API", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Machines, departments, images, tasks and the journal of a parc imaging appliance. Errors are {\"error\": message} (and \"field\" for invalid fields)." },
        "servers": [{ "url": "/" }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "token": { "type": "http", "scheme": "bearer", "description": "API token (POST /api/v1/tokens)" },
                "password": { "type": "http", "scheme": "basic", "description": "login and password: only to create tokens and change the password" },
                "agentToken": { "type": "http", "scheme": "bearer", "description": "the agent's session, from hello with the boot script's credential (parc.token=)" }
            },
            "schemas": { "Error": { "type": "object", "properties": { "error": { "type": "string" }, "field": { "type": "string" } }, "required": ["error"] } }
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
