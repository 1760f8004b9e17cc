-- API tokens end: each has an expiry (default 90 days, at most a year). Tokens made before
-- this version never ended; they get 90 days from the upgrade.
ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER;
UPDATE api_tokens SET expires_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000 + 90 * 86400000
 WHERE expires_at IS NULL;
