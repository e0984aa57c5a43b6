-- Operators: dead-letter replay with an audit log, and queue pause.

-- A replay gives a job a fresh attempt budget while keeping its attempt history (attempt
-- numbers go on): `max_attempts` becomes attempts so far + the budget. The budget is the
-- job's original `max_attempts`, remembered here at its first replay (NULL: never replayed).
ALTER TABLE jobs ADD COLUMN attempt_budget integer;

-- Dead letters, newest first per tenant. Few rows (only dead jobs), and only a job's death
-- or replay writes it.
CREATE INDEX jobs_dead ON jobs (tenant_id, id DESC) WHERE status = 'dead';

-- Who did what, when: operator actions (replays, queue pauses), one row each.
CREATE TABLE audit_log (
    id          uuid PRIMARY KEY,             -- UUIDv7: newest first by id
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key_id      uuid,                         -- the API key that acted
    action      text NOT NULL,                -- `job.replayed`, `queue.paused`, `queue.resumed`
    target      text NOT NULL,                -- a job id, a queue name
    details     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id DESC);
CREATE INDEX audit_log_target ON audit_log (tenant_id, target, id DESC);

-- Paused queues: workers stop consuming them (jobs stay in RabbitMQ); submission goes on.
-- Queues are the deployment's, shared by its tenants, so a pause is too.
CREATE TABLE queue_pauses (
    queue       text PRIMARY KEY,
    paused_at   timestamptz NOT NULL DEFAULT now(),
    tenant_id   uuid REFERENCES tenants(id) ON DELETE SET NULL,
    key_id      uuid
);
