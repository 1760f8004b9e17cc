-- Per-machine secrets (a domain-join credential, an offline-join blob): kept here, never in
-- git, an image or the journal; a machine's running task alone receives them, inside the
-- profile files that name them.
CREATE TABLE machine_secrets (
    mac TEXT NOT NULL,
    name TEXT NOT NULL,
    value BLOB NOT NULL,
    set_by TEXT NOT NULL,
    set_at INTEGER NOT NULL,
    PRIMARY KEY (mac, name)
);
