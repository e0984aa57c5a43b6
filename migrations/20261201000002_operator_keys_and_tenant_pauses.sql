-- Operator keys and pauses per tenant.
--
-- A tenant's admin pausing a queue held back every tenant's jobs in it. Now a pause names the
-- tenant it holds back; only an operator key (of the operators' own tenant, which owns no
-- work) pauses a queue for every tenant (tenant_id NULL).

-- The operators' tenant: operator keys belong to it, so they carry no tenant's data.
INSERT INTO tenants (id, name) VALUES ('00000000-0000-0000-0000-000000000000', '(operators)')
ON CONFLICT DO NOTHING;

-- Existing pauses were made by tenants' admins: from now on they hold back those tenants
-- only. A pause whose tenant is gone is dropped (it would otherwise become everyone's).
DELETE FROM queue_pauses WHERE tenant_id IS NULL;
ALTER TABLE queue_pauses DROP CONSTRAINT queue_pauses_pkey;
ALTER TABLE queue_pauses DROP CONSTRAINT queue_pauses_tenant_id_fkey;
ALTER TABLE queue_pauses ADD CONSTRAINT queue_pauses_tenant_id_fkey
    FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE;
-- One pause per queue and tenant, and one for every tenant (NULL).
CREATE UNIQUE INDEX queue_pauses_scope
    ON queue_pauses (queue, COALESCE(tenant_id, '00000000-0000-0000-0000-000000000000'));

-- A queued job whose message a worker dropped because its queue was paused for its tenant.
-- Resuming publishes exactly these again (and nothing else); the stale-job republisher leaves
-- them alone while they wait. (Their index is built concurrently, in 20261201000008.)
ALTER TABLE jobs ADD COLUMN held_at timestamptz;

-- Deployment-wide actions (an operator's pause) are audited once, with no tenant, and every
-- tenant reads them in its audit log beside its own.
ALTER TABLE audit_log ALTER COLUMN tenant_id DROP NOT NULL;
CREATE INDEX audit_log_deployment ON audit_log (id DESC) WHERE tenant_id IS NULL;
