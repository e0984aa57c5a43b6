-- Signing secrets are sealed at rest (see core/src/sealing.rs). A tenant's callback secret
-- was made here in SQL, in clear; it is now made and sealed by Conveyor when the tenant is
-- created, and those already stored are sealed at the next start-up.
ALTER TABLE tenants ALTER COLUMN callback_secret DROP DEFAULT;
