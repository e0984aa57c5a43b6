-- The jobs backbone: tenants, hashed API keys, jobs with their attempts, and the outbox.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Keys are random 256-bit tokens, so a single SHA-256 is the right hash: there is nothing
-- to brute-force, and lookup by hash stays an index probe.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key_hash    bytea NOT NULL UNIQUE,
    prefix      text NOT NULL,
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE jobs (
    id                uuid PRIMARY KEY,          -- UUIDv7: time-ordered, so id DESC is newest first
    tenant_id         uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    type              text NOT NULL,
    queue             text NOT NULL,
    status            text NOT NULL CHECK (status IN
                        ('scheduled','queued','running','retrying','succeeded','dead','cancelled')),
    priority          smallint NOT NULL DEFAULT 0,
    payload           jsonb NOT NULL,
    result            jsonb,
    error             text,
    attempts          integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL,
    timeout_seconds   integer NOT NULL,
    run_at            timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    callback_url      text,
    saga_id           uuid,
    metadata          jsonb NOT NULL DEFAULT '{}',
    idempotency_key   text,
    request_hash      bytea,
    -- The lease: who runs the job now, under which token, and until when. Every transition out
    -- of `running` is guarded by the token, so a late or duplicate worker can never overwrite it.
    worker_id         text,
    lease_token       uuid,
    lease_expires_at  timestamptz
);

CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Listing walks this, newest first, filtering on status/queue/type. No index has status as a
-- key: every transition would write it (status sits in partial-index predicates, so job
-- updates are never HOT and each update inserts into every full index).
CREATE INDEX jobs_tenant_newest ON jobs (tenant_id, id DESC);
CREATE INDEX jobs_due ON jobs (run_at) WHERE status IN ('scheduled', 'retrying');
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE status = 'running';

CREATE TABLE job_attempts (
    job_id       uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    outcome      text NOT NULL CHECK (outcome IN ('running','succeeded','failed','timed_out','lost')),
    error        text,
    worker       text NOT NULL,
    PRIMARY KEY (job_id, attempt)
);

-- Messages waiting to be published. A row is written in the same transaction as the state
-- change that needs it and deleted only after RabbitMQ confirmed the publish.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('job', 'dead')),
    routing_key  text NOT NULL,
    job_id       uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
