-- Console sessions: the console's cookie holds a random session id, never the API key. A
-- session is its key's (revoking the key ends it), expires, carries its CSRF token, and ends
-- when its operator signs out. Only the id's hash is stored.
CREATE TABLE console_sessions (
    id_hash     bytea PRIMARY KEY,
    key_id      uuid NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX console_sessions_expired ON console_sessions (expires_at);
