-- parc appliance state that is not inventory: the inventory (who a machine is, which
-- department) lives in the profiles git repository; this database holds what happens to
-- machines (hardware reported by agents, tasks, progress) and who may act (users, tokens),
-- and the audit journal. Times are unix milliseconds.

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    login TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'technician', 'readonly')),
    password_hash TEXT,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at INTEGER
);

-- What agents reported about a machine, and the outcome of its last deployment.
CREATE TABLE machines (
    mac TEXT PRIMARY KEY,
    serial TEXT,
    uuid TEXT,
    model TEXT,
    memory_bytes INTEGER,
    disks TEXT,
    ip TEXT,
    first_seen INTEGER,
    last_seen INTEGER,
    image_digest TEXT,
    installed_at INTEGER,
    first_boot_at INTEGER
);

CREATE TABLE tasks (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('install', 'move', 'replace', 'reimage', 'capture')),
    mac TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    department TEXT,
    image_ref TEXT,
    image_digest TEXT,
    hostname TEXT,
    replaces TEXT,
    reason TEXT,
    batch TEXT,
    commit_id TEXT,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    updated_at INTEGER,
    finished_at INTEGER,
    phase TEXT,
    bytes_done INTEGER NOT NULL DEFAULT 0,
    bytes_total INTEGER NOT NULL DEFAULT 0,
    bytes_fetched INTEGER NOT NULL DEFAULT 0,
    rate_bps INTEGER NOT NULL DEFAULT 0,
    message TEXT,
    token_hash TEXT
);
-- At most one queued or running task per machine: two technicians acting on the same
-- machine at once get a conflict from the database itself, not from a race in the server.
CREATE UNIQUE INDEX tasks_one_active ON tasks(mac) WHERE state IN ('queued', 'running');
CREATE INDEX tasks_by_mac ON tasks(mac, id);
CREATE INDEX tasks_by_state ON tasks(state, id);
CREATE UNIQUE INDEX tasks_by_token ON tasks(token_hash) WHERE token_hash IS NOT NULL;

-- The audit journal: every action, who did it, on what, and how it ended.
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    mac TEXT,
    task_id INTEGER,
    message TEXT NOT NULL,
    data TEXT
);
CREATE INDEX events_by_mac ON events(mac, id);
CREATE INDEX events_by_task ON events(task_id, id);
