use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Store;
use crate::model::{Principal, Scope, OPERATORS_TENANT};

const KEY_PREFIX: &str = "cvy_";

/// A new random key (256 bits): `cvy_` followed by 64 hex digits.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// Keys carry 256 bits of entropy, so one SHA-256 is enough: nothing to brute-force.
pub fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

impl Store {
    /// The tenant's id, creating the tenant when it is new.
    pub async fn ensure_tenant(&self, name: &str) -> sqlx::Result<Uuid> {
        sqlx::query_scalar(
            "INSERT INTO tenants (id, name) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(name)
        .fetch_one(&self.pool)
        .await
    }

    /// The id of the tenant of that name, if there is one.
    pub async fn tenant_id(&self, name: &str) -> sqlx::Result<Option<Uuid>> {
        sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
    }

    /// Creates a key and returns it: the only time it exists in clear.
    pub async fn create_key(&self, tenant_id: Uuid, scopes: &[Scope]) -> sqlx::Result<String> {
        self.create_key_limited(tenant_id, scopes, None).await
    }

    /// The same, with a request rate of its own (per second, per API process).
    pub async fn create_key_limited(
        &self,
        tenant_id: Uuid,
        scopes: &[Scope],
        rate_limit_per_second: Option<u32>,
    ) -> sqlx::Result<String> {
        let key = generate_key();
        let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, key_hash, prefix, scopes, rate_limit_per_second)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(Uuid::now_v7())
        .bind(tenant_id)
        .bind(hash_key(&key))
        .bind(&key[..KEY_PREFIX.len() + 8])
        .bind(&scopes)
        .bind(rate_limit_per_second.map(|r| i32::try_from(r).unwrap_or(i32::MAX)))
        .execute(&self.pool)
        .await?;
        Ok(key)
    }

    /// The principal of a key that is known and not revoked.
    pub async fn find_key(&self, key: &str) -> sqlx::Result<Option<Principal>> {
        let row: Option<(Uuid, Uuid, Vec<String>, Option<i32>)> = sqlx::query_as(
            "SELECT id, tenant_id, scopes, rate_limit_per_second FROM api_keys
             WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash_key(key))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(key_id, tenant_id, scopes, rate)| Principal {
            tenant_id,
            key_id,
            scopes: scopes
                .iter()
                .filter_map(|s| Scope::parse(s))
                // Only the operators' tenant holds the operator scope, whatever a row says.
                .filter(|s| *s != Scope::Operator || tenant_id == OPERATORS_TENANT)
                .collect(),
            rate_limit_per_second: rate.and_then(|r| u32::try_from(r).ok()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hash_is_stable() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert!(a.starts_with("cvy_") && a.len() == 4 + 64);
        assert_eq!(hash_key(&a), hash_key(&a));
        assert_ne!(hash_key(&a), hash_key(&b));
    }
}
