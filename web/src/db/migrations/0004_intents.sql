-- Inventory operations in flight (db/intents.rs): the tasks and journal entries an
-- operation plans, written before its git commit and turned into rows in one transaction
-- after it. One left at start was interrupted by a crash and is reconciled with the
-- repository: applied when its commit (trailer "Parc-Intent: <id>") is on main, else dropped.
CREATE TABLE intents (
    id TEXT PRIMARY KEY,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    base_commit TEXT NOT NULL,
    plan TEXT NOT NULL
);
