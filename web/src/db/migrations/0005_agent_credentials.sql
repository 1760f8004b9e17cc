-- Credentials of network-booted machines, apart from the task's agent session (tasks.token_hash):
--   boot       carried by a boot script: single use, bound to the address that fetched the
--              script, minutes long; exchanged at hello for a session;
--   standby    a waiting agent's session (no task yet), bound to its address;
--   first_boot the installed system's single-use report that it booted.
-- Only sha256 digests of the secrets are stored.
CREATE TABLE agent_credentials (
    hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('boot', 'standby', 'first_boot')),
    mac TEXT NOT NULL,
    task_id INTEGER,
    address TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX agent_credentials_by_mac ON agent_credentials(mac, kind);
