//! API key verification, with a cache that keeps a lookup off most requests and off every
//! request bearing a made-up key.
//!
//! - A verified key is cached for `TTL` while this process hears key changes (its LISTEN
//!   connection is up: see `listener`); a revocation anywhere empties every process's cache
//!   within moments. While it does not hear them, a cached key stands for `UNHEARD_TTL` only,
//!   so a revocation still holds within a second.
//! - Text that is not shaped like a key is refused without a lookup; a key that failed is
//!   refused from memory for `UNKNOWN_TTL`.
//! - A key whose prefix no live key has (the set is loaded when listening starts and grows as
//!   keys are made) is almost surely made up: such keys are looked up at most
//!   `UNKNOWN_PREFIX_LOOKUPS` times a second per process (room for a key made a moment ago
//!   whose announcement has not arrived), so a flood of random keys costs the database
//!   nothing that other tenants would feel.

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroU32,
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::Utc;
use conveyor_core::{
    store::{hash_key, key_prefix, looks_like_key, VerifiedKey},
    Principal, Scope, Store,
};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::problem::Problem;

const TTL: Duration = Duration::from_secs(30);
const UNHEARD_TTL: Duration = Duration::from_secs(1);
const UNKNOWN_TTL: Duration = Duration::from_secs(5);
const UNKNOWN_PREFIX_LOOKUPS: u32 = 20;
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

pub struct KeyCache {
    state: Mutex<State>,
    unknown_prefix_lookups: DefaultDirectRateLimiter,
}

#[derive(Default)]
struct State {
    /// Bumped whenever cached keys are dropped: a lookup that began before must not cache
    /// what it found (the key may have been revoked meanwhile).
    generation: u64,
    /// Whether key changes are heard now.
    listening: bool,
    /// Keyed by the key's hash, so the cache holds no key in clear.
    known: HashMap<Vec<u8>, (VerifiedKey, Instant)>,
    unknown: HashMap<Vec<u8>, Instant>,
    /// The prefixes of live keys, while listening.
    prefixes: Option<HashSet<String>>,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            unknown_prefix_lookups: RateLimiter::direct(Quota::per_second(
                NonZeroU32::new(UNKNOWN_PREFIX_LOOKUPS).expect("not zero"),
            )),
        }
    }
}

impl KeyCache {
    pub async fn verify(&self, store: &Store, key: &str) -> Result<Option<Principal>, Problem> {
        if !looks_like_key(key) {
            return Ok(None);
        }
        let hash = hash_key(key);
        let generation = {
            let mut s = self.state.lock().unwrap();
            let ttl = if s.listening { TTL } else { UNHEARD_TTL };
            if let Some((k, at)) = s.known.get(&hash) {
                if at.elapsed() < ttl {
                    if k.expires_at.is_none_or(|e| e > Utc::now()) {
                        return Ok(Some(k.principal.clone()));
                    }
                    s.known.remove(&hash);
                    return Ok(None); // expired
                }
            }
            if s.unknown
                .get(&hash)
                .is_some_and(|at| at.elapsed() < UNKNOWN_TTL)
            {
                return Ok(None);
            }
            let unheard_of = s
                .prefixes
                .as_ref()
                .is_some_and(|p| !p.contains(key_prefix(key)));
            if unheard_of && self.unknown_prefix_lookups.check().is_err() {
                return Ok(None);
            }
            s.generation
        };
        let found = store.find_key(key).await?;
        let mut s = self.state.lock().unwrap();
        if s.generation == generation {
            if s.known.len() >= MAX_ENTRIES {
                s.known.clear();
            }
            if s.unknown.len() >= MAX_ENTRIES {
                s.unknown.clear();
            }
            match &found {
                Some(k) => {
                    s.known.insert(hash, (k.clone(), Instant::now()));
                    if let Some(p) = s.prefixes.as_mut() {
                        p.insert(key_prefix(key).to_owned());
                    }
                }
                None => {
                    s.unknown.insert(hash, Instant::now());
                }
            }
        }
        Ok(found.map(|k| k.principal))
    }

    /// A key was revoked somewhere: drop every cached key.
    pub fn revoked(&self) {
        let mut s = self.state.lock().unwrap();
        s.generation += 1;
        s.known.clear();
    }

    /// A key was made somewhere: its prefix is live.
    pub fn created(&self, prefix: &str) {
        if let Some(p) = self.state.lock().unwrap().prefixes.as_mut() {
            p.insert(prefix.to_owned());
        }
    }

    /// Key changes are heard from now on (with the live prefixes read after listening began),
    /// or no longer are (`None`). Either way what is cached may have missed a change.
    pub fn listening(&self, prefixes: Option<HashSet<String>>) {
        let mut s = self.state.lock().unwrap();
        s.generation += 1;
        s.known.clear();
        s.listening = prefixes.is_some();
        s.prefixes = prefixes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_core::store::generate_key;

    /// A store whose database cannot be reached: any lookup fails (503), so a test sees
    /// exactly which verifications went to the database.
    fn unreachable_store() -> Store {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(5))
            .connect_lazy("postgres://postgres@127.0.0.1:1/nothing")
            .unwrap();
        Store::development(pool)
    }

    async fn lookups(cache: &KeyCache, store: &Store, keys: &[String]) -> usize {
        let mut went_to_the_database = 0;
        for k in keys {
            match cache.verify(store, k).await {
                Ok(None) => {}
                Err(_) => went_to_the_database += 1,
                Ok(Some(_)) => panic!("a made-up key verified"),
            }
        }
        went_to_the_database
    }

    #[tokio::test]
    async fn made_up_keys_cost_the_database_a_bounded_number_of_lookups() {
        let store = unreachable_store();
        let flood: Vec<String> = (0..500).map(|_| generate_key()).collect();

        // Not shaped like a key: never looked up.
        let cache = KeyCache::default();
        let garbage: Vec<String> = ["", "cvy_", "cvk_wrongwrongwrong", "Bearer x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(lookups(&cache, &store, &garbage).await, 0);
        // Without the live prefixes (not listening), every new key is looked up...
        assert_eq!(lookups(&cache, &store, &flood[..50]).await, 50);
        // ...with them, a key of an unheard-of prefix only within a small budget.
        cache.listening(Some(HashSet::from(["cvy_00000000".to_owned()])));
        let went = lookups(&cache, &store, &flood).await;
        assert!(went <= 30, "{went} of 500 made-up keys were looked up");
    }
}
