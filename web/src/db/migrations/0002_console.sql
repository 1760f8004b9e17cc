-- The web console: browser sessions (the cookie holds a random secret; only its sha256 is
-- stored) and failed logins, counted per login and per client address for throttling.

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    -- Every form of this session carries it; a POST without it is refused.
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_by_user ON sessions(user_id);

-- key is 'login:<login>' or 'ip:<address>'; a success clears the login's row.
CREATE TABLE login_failures (
    key TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_failure_at INTEGER NOT NULL
);

-- The console's campaign view lists the tasks of one bulk operation.
CREATE INDEX tasks_by_batch ON tasks(batch, id) WHERE batch IS NOT NULL;
