//! API key verification with a short cache: at thousands of requests a second the lookup by
//! hash would otherwise be a query per request. A revoked key stops working within the TTL.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use conveyor_core::{store::hash_key, Principal, Scope, Store};

use crate::problem::Problem;

const TTL: Duration = Duration::from_secs(30);
const MAX_ENTRIES: usize = 10_000;

/// The verified caller of a request.
pub struct Auth(pub Principal);

impl Auth {
    pub fn require(&self, scope: Scope) -> Result<&Principal, Problem> {
        if self.0.has(scope) {
            Ok(&self.0)
        } else {
            Err(Problem::forbidden(scope.as_str()))
        }
    }
}

#[derive(Default)]
pub struct KeyCache {
    // Keyed by the key's hash, so the cache holds no key in clear.
    entries: Mutex<HashMap<Vec<u8>, (Principal, Instant)>>,
}

impl KeyCache {
    pub async fn verify(&self, store: &Store, key: &str) -> Result<Option<Principal>, Problem> {
        let hash = hash_key(key);
        if let Some((p, at)) = self.entries.lock().unwrap().get(&hash) {
            if at.elapsed() < TTL {
                return Ok(Some(p.clone()));
            }
        }
        let found = store.find_key(key).await?;
        if let Some(p) = &found {
            let mut entries = self.entries.lock().unwrap();
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(hash, (p.clone(), Instant::now()));
        }
        Ok(found)
    }
}
