-- Computer accounts parc provisioned in the domain, by name: a later task reuses an account only
-- when it belongs to the same machine (or the one it replaces); any other account of that name
-- is someone else's and is never reset. Blobs are never stored.
CREATE TABLE domain_accounts (
    name TEXT PRIMARY KEY,
    mac TEXT NOT NULL,
    realm TEXT NOT NULL,
    ou TEXT NOT NULL,
    provisioned_at INTEGER NOT NULL
);
