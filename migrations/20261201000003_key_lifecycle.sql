-- API keys with a lifecycle: a name, an expiry, when they were last used, who made them.
-- Revocation was already a column; now it is an API call, and every API process hears of it
-- (NOTIFY conveyor_keys) and drops its cached keys within moments.
ALTER TABLE api_keys
    ADD COLUMN name          text NOT NULL DEFAULT '',
    ADD COLUMN expires_at    timestamptz,
    ADD COLUMN last_used_at  timestamptz,
    ADD COLUMN created_by    uuid;   -- the key that made it (NULL: `conveyor keys create`)
-- A tenant's keys, newest first.
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id DESC);
