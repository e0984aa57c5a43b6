//! API keys.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// What a key may do. `admin` implies every scope of its tenant; `operator` (operator keys
/// only) implies nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Scope {
    #[serde(rename = "jobs:write")]
    JobsWrite,
    #[serde(rename = "jobs:read")]
    JobsRead,
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    #[serde(rename = "webhooks:read")]
    WebhooksRead,
    /// Declares job types and runs them: leases, heartbeats, outcomes (remote workers).
    #[serde(rename = "workers")]
    Workers,
    #[serde(rename = "admin")]
    Admin,
    #[serde(rename = "operator")]
    Operator,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::JobsWrite,
        Scope::JobsRead,
        Scope::WebhooksWrite,
        Scope::WebhooksRead,
        Scope::Workers,
        Scope::Admin,
        Scope::Operator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::JobsWrite => "jobs:write",
            Scope::JobsRead => "jobs:read",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::WebhooksRead => "webhooks:read",
            Scope::Workers => "workers",
            Scope::Admin => "admin",
            Scope::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|sc| sc.as_str() == s)
    }
}

/// A key to make: never with more scopes than the key making it (a `403` otherwise), nor a
/// higher rate, nor a later expiry.
///
/// Besides what its schema says, `expires_at` must be in the future and not after the
/// making key's, and `rate_limit_per_second` at most the making key's: a `422` says so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for, to tell keys apart.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    #[schema(min_items = 1)]
    pub scopes: Vec<Scope>,
    /// When the key stops working; none: when the key making it does, or never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Requests per second for this key, per API process; none: the making key's, or the
    /// deployment's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub rate_limit_per_second: Option<u32>,
}

/// A key as its tenant's admins see it: never the key itself, only its first characters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct KeyInfo {
    pub id: Uuid,
    pub name: String,
    /// The key's first characters (`cvy_` and 8 hex digits), to tell keys apart.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub rate_limit_per_second: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key just made: the key itself is in this answer and nowhere else, ever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub info: KeyInfo,
    /// The key, shown this once: keep it now.
    pub key: String,
}
