-- Requests per API key, per UTC day and route class, for `GET /v1/usage`. Each API process
-- counts in memory and adds its counts here every few seconds, so a row is one upsert per
-- flush, not one per request.
CREATE TABLE api_usage (
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key_id       uuid NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    day          date NOT NULL,
    route_class  text NOT NULL,
    requests     bigint NOT NULL,
    PRIMARY KEY (key_id, day, route_class)
);
CREATE INDEX api_usage_tenant_day ON api_usage (tenant_id, day);
