-- Cron schedules. The leader scheduler fires due schedules; each fire is a row unique per
-- (schedule, fire time), written in the transaction that makes its job, so a tick fires once
-- even if two schedulers ever believe they lead.

CREATE TABLE schedules (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name           text NOT NULL,
    cron           text NOT NULL,
    timezone       text NOT NULL DEFAULT 'UTC',
    job            jsonb NOT NULL,          -- the validated job template
    enabled        boolean NOT NULL DEFAULT true,
    overlap        text NOT NULL DEFAULT 'skip' CHECK (overlap IN ('skip', 'allow')),
    catch_up       text NOT NULL DEFAULT 'once' CHECK (catch_up IN ('once', 'none')),
    next_fire_at   timestamptz,             -- NULL: the expression never fires again
    last_fired_at  timestamptz,
    last_job_id    uuid,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE enabled;
CREATE INDEX schedules_tenant ON schedules (tenant_id, id DESC);

CREATE TABLE schedule_fires (
    schedule_id  uuid NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
    fire_time    timestamptz NOT NULL,
    job_id       uuid,                      -- NULL: the tick was skipped (see `skipped`)
    skipped      text,
    fired_by     text NOT NULL,
    fired_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, fire_time)
);
