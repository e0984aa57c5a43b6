use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Store, StoreResult};
use crate::model::{Principal, Scope, OPERATORS_TENANT};

const KEY_PREFIX: &str = "cvy_";

/// A new random key (256 bits): `cvy_` followed by 64 hex digits.
pub fn generate_key() -> String {
    format!("{KEY_PREFIX}{}", crate::token::random_hex(32))
}

/// Keys carry 256 bits of entropy, so one SHA-256 is enough: nothing to brute-force.
pub fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// The channel on which key changes are announced to every API process: `created:<hex>` when
/// a key is made (the first 16 bytes of its hash), `revoked:<hex>` when one is revoked (its
/// whole hash).
pub const KEYS_CHANNEL: &str = "conveyor_keys";

/// How much of a key's hash the API processes keep to know it is live: 128 bits, so a
/// made-up key matches one by chance never.
pub const LIVE_HASH_BYTES: usize = 16;

/// A key to make.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Requests per second per API process, instead of the deployment's default.
    pub rate_limit_per_second: Option<u32>,
    /// The key that made it (`None`: the command line's bootstrap).
    pub created_by: Option<Uuid>,
}

pub use conveyor_types::keys::KeyInfo;

const KEY_INFO_COLUMNS: &str =
    "id, name, prefix, scopes, rate_limit_per_second, created_at, last_used_at, expires_at, revoked_at";

/// The prefix a key is shown and filtered by: `cvy_` and its first 8 hex digits.
pub fn key_prefix(key: &str) -> &str {
    &key[..KEY_PREFIX.len() + 8]
}

/// Whether text has the form of a key (`cvy_` and 64 lowercase hex digits): anything else is
/// refused without a lookup.
pub fn looks_like_key(key: &str) -> bool {
    key.len() == KEY_PREFIX.len() + 64
        && key.starts_with(KEY_PREFIX)
        && key[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A key revoked by `revoke_key`, and its hash when this call revoked it (not when it was
/// revoked already): what a process's key cache drops.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub info: KeyInfo,
    pub key_hash: Option<Vec<u8>>,
}

impl Store {
    /// The tenant's id, creating the tenant when it is new.
    /// A new tenant gets a callback signing secret of its own, sealed.
    pub async fn ensure_tenant(&self, name: &str) -> StoreResult<Uuid> {
        sqlx::query_scalar(
            "INSERT INTO tenants (id, name, callback_secret) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(self.keyring.seal(&crate::signing::Secret::generate()))
        .fetch_one(&self.pool)
        .await
        .map_err(Into::into)
    }

    /// The id of the tenant of that name, if there is one.
    pub async fn tenant_id(&self, name: &str) -> StoreResult<Option<Uuid>> {
        sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(Into::into)
    }

    /// Creates a key and returns it: the only time it exists in clear.
    pub async fn create_key(&self, tenant_id: Uuid, scopes: &[Scope]) -> StoreResult<String> {
        self.create_key_limited(tenant_id, scopes, None).await
    }

    /// The same, with a request rate of its own (per second, per API process).
    pub async fn create_key_limited(
        &self,
        tenant_id: Uuid,
        scopes: &[Scope],
        rate_limit_per_second: Option<u32>,
    ) -> StoreResult<String> {
        let new = NewKey {
            name: String::new(),
            scopes: scopes.to_vec(),
            expires_at: None,
            rate_limit_per_second,
            created_by: None,
        };
        Ok(self.make_key(tenant_id, &new).await?.1)
    }

    /// Makes a key (audited when another key made it) and announces its prefix to every API
    /// process; returns it with the key in clear, the only time it exists so.
    pub async fn make_key(&self, tenant_id: Uuid, new: &NewKey) -> StoreResult<(KeyInfo, String)> {
        let key = generate_key();
        let scopes: Vec<&str> = new.scopes.iter().map(|s| s.as_str()).collect();
        let mut tx = self.pool.begin().await?;
        let info: KeyInfo = sqlx::query_as(&format!(
            "INSERT INTO api_keys (id, tenant_id, key_hash, prefix, scopes, rate_limit_per_second,
                                   name, expires_at, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {KEY_INFO_COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(tenant_id)
        .bind(hash_key(&key))
        .bind(key_prefix(&key))
        .bind(&scopes)
        .bind(
            new.rate_limit_per_second
                .map(|r| i32::try_from(r).unwrap_or(i32::MAX)),
        )
        .bind(&new.name)
        .bind(new.expires_at)
        .bind(new.created_by)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(by) = new.created_by {
            audit_key(&mut tx, tenant_id, by, "key.created", &info).await?;
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(KEYS_CHANNEL)
            .bind(format!(
                "created:{}",
                hex::encode(&hash_key(&key)[..LIVE_HASH_BYTES])
            ))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((info, key))
    }

    /// The tenant's keys, newest first, revoked ones included.
    pub async fn list_keys(
        &self,
        tenant_id: Uuid,
        before: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<KeyInfo>> {
        self.page_of("api_keys", KEY_INFO_COLUMNS, tenant_id, before, limit)
            .await
    }

    /// Revokes one of the tenant's keys (audited, naming `by`) and tells every API process to
    /// drop it from its cache. `None` when the tenant has no such key; a key revoked already
    /// is answered as it is.
    pub async fn revoke_key(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        by: Uuid,
    ) -> StoreResult<Option<Revocation>> {
        #[derive(sqlx::FromRow)]
        struct Revoked {
            #[sqlx(flatten)]
            info: KeyInfo,
            key_hash: Vec<u8>,
        }
        let mut tx = self.pool.begin().await?;
        let revoked: Option<Revoked> = sqlx::query_as(&format!(
            "UPDATE api_keys SET revoked_at = now()
             WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL
             RETURNING {KEY_INFO_COLUMNS}, key_hash"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(Revoked { info, key_hash }) = revoked else {
            tx.rollback().await?;
            let info: Option<KeyInfo> = self
                .one_of("api_keys", KEY_INFO_COLUMNS, tenant_id, id)
                .await?;
            return Ok(info.map(|info| Revocation {
                info,
                key_hash: None,
            }));
        };
        audit_key(&mut tx, tenant_id, by, "key.revoked", &info).await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(KEYS_CHANNEL)
            .bind(format!("revoked:{}", hex::encode(&key_hash)))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Revocation {
            info,
            key_hash: Some(key_hash),
        }))
    }

    /// The principal of a key that is known, not revoked and not expired.
    pub async fn find_key(&self, key: &str) -> StoreResult<Option<Principal>> {
        let row: Option<KeyRow> = sqlx::query_as(
            "SELECT id, tenant_id, scopes, rate_limit_per_second, expires_at FROM api_keys
             WHERE key_hash = $1 AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > now())",
        )
        .bind(hash_key(key))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(KeyRow::principal))
    }

    /// The first `LIVE_HASH_BYTES` of the hash of every key that may verify (not revoked, not
    /// expired): a key not among them is unknown without a lookup.
    pub async fn live_key_hashes(&self) -> StoreResult<Vec<Vec<u8>>> {
        sqlx::query_scalar(
            "SELECT substring(key_hash FROM 1 FOR $1) FROM api_keys
             WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
        )
        .bind(LIVE_HASH_BYTES as i32)
        .fetch_all(&self.pool)
        .await
        .map_err(Into::into)
    }

    /// Notes that these keys were used just now (at most every few seconds per key: the API
    /// processes call it when they store usage).
    pub async fn touch_keys(&self, ids: &[Uuid]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = ANY ($1)")
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// What a key stands for, as stored.
#[derive(sqlx::FromRow)]
pub(super) struct KeyRow {
    id: Uuid,
    tenant_id: Uuid,
    scopes: Vec<String>,
    rate_limit_per_second: Option<i32>,
    expires_at: Option<DateTime<Utc>>,
}

impl KeyRow {
    pub(super) fn principal(self) -> Principal {
        let tenant_id = self.tenant_id;
        Principal {
            tenant_id,
            key_id: self.id,
            scopes: self
                .scopes
                .iter()
                .filter_map(|s| Scope::parse(s))
                // Only the operators' tenant holds the operator scope, whatever a row says.
                .filter(|s| *s != Scope::Operator || tenant_id == OPERATORS_TENANT)
                .collect(),
            rate_limit_per_second: self
                .rate_limit_per_second
                .and_then(|r| u32::try_from(r).ok()),
            expires_at: self.expires_at,
        }
    }
}

async fn audit_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant_id: Uuid,
    by: Uuid,
    action: &str,
    info: &KeyInfo,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, tenant_id, key_id, action, target, details)
         VALUES (conveyor_uuid_v7(), $1, $2, $3, $4, $5)",
    )
    .bind(tenant_id)
    .bind(by)
    .bind(action)
    .bind(info.id.to_string())
    .bind(serde_json::json!({"name": info.name, "prefix": info.prefix, "scopes": info.scopes}))
    .execute(&mut **tx)
    .await?;
    Ok(())
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
        assert!(looks_like_key(&a));
        assert_eq!(key_prefix(&a).len(), 12);
        for not_a_key in [
            "",
            "cvy_",
            "cvk_wrong",
            &a.to_uppercase(),
            &a[..60],
            &format!("{a}0"),
        ] {
            assert!(!looks_like_key(not_a_key), "{not_a_key}");
        }
    }
}
