//! Console sessions: a random id in the operator's cookie stands for an API key, server-side,
//! so the cookie never holds the key, signing out ends the session, and revoking the key ends
//! every session it has.

use std::time::Duration;

use crate::token::random_hex;
use uuid::Uuid;

use super::{hash_key, keys::KeyRow, millis, Store, StoreResult};
use crate::model::Principal;

/// A session just opened: its id (for the cookie, shown this once) and its CSRF token.
pub struct OpenedSession {
    pub id: String,
    pub csrf_token: String,
}

/// A live session: its key's principal and the token its forms must carry.
pub struct LiveSession {
    pub principal: Principal,
    pub csrf_token: String,
}

impl Store {
    /// Opens a session for a key, lasting `ttl`; sessions that expired are cleared on the way.
    pub async fn open_session(&self, key_id: Uuid, ttl: Duration) -> StoreResult<OpenedSession> {
        let opened = OpenedSession {
            id: random_hex(32),
            csrf_token: random_hex(32),
        };
        sqlx::query(
            "WITH gone AS (DELETE FROM console_sessions WHERE expires_at < now())
             INSERT INTO console_sessions (id_hash, key_id, csrf_token, expires_at)
             VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond')",
        )
        .bind(hash_key(&opened.id))
        .bind(key_id)
        .bind(&opened.csrf_token)
        .bind(millis(ttl))
        .execute(&self.pool)
        .await?;
        Ok(opened)
    }

    /// The session of that id, while it and its key are valid (neither expired, the key not
    /// revoked).
    pub async fn session(&self, id: &str) -> StoreResult<Option<LiveSession>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            key: KeyRow,
            csrf_token: String,
        }
        let row: Option<Row> = sqlx::query_as(
            "SELECT k.id, k.tenant_id, k.scopes, k.rate_limit_per_second, k.expires_at,
                    s.csrf_token
             FROM console_sessions s JOIN api_keys k ON k.id = s.key_id
             WHERE s.id_hash = $1 AND s.expires_at > now() AND k.revoked_at IS NULL
               AND (k.expires_at IS NULL OR k.expires_at > now())",
        )
        .bind(hash_key(id))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| LiveSession {
            principal: r.key.principal(),
            csrf_token: r.csrf_token,
        }))
    }

    /// Ends a session (signing out).
    pub async fn close_session(&self, id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(hash_key(id))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
