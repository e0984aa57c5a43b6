//! API key verification, with a cache that keeps a lookup off most requests and off every
//! request bearing a made-up key.
//!
//! - A verified key is cached for `TTL` while this process hears key changes (its LISTEN
//!   connection is up: see `listener`); a revocation anywhere drops that key from every
//!   process's cache within moments. While it does not hear them, a cached key stands for
//!   `UNHEARD_TTL` only, so a revocation still holds within a second.
//! - Every process knows the live keys by the first 16 bytes of their hashes (loaded when
//!   listening starts, grown as keys are made): a key not among them is made up, and is
//!   refused without a lookup, save `UNKNOWN_LOOKUPS` a second per process (room for a key
//!   made a moment ago whose announcement has not arrived). So a flood of made-up keys, even
//!   with a real key's prefix, costs the database nothing that other tenants would feel.
//! - Text not shaped like a key is refused without a lookup; a key that failed is refused
//!   from memory for `UNKNOWN_TTL`.

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroU32,
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::Utc;
use conveyor_core::{
    store::{hash_key, looks_like_key, LIVE_HASH_BYTES},
    Principal, Scope, Store,
};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};

use crate::{http::problem::Problem, AppState};

const TTL: Duration = Duration::from_secs(30);
const UNHEARD_TTL: Duration = Duration::from_secs(1);
const UNKNOWN_TTL: Duration = Duration::from_secs(5);
const UNKNOWN_LOOKUPS: u32 = 20;
const MAX_ENTRIES: usize = 10_000;

/// The part of a key's hash the live set holds.
type LiveHash = [u8; LIVE_HASH_BYTES];

fn live_hash(hash: &[u8]) -> LiveHash {
    hash[..LIVE_HASH_BYTES]
        .try_into()
        .expect("a SHA-256 is longer than that")
}

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
    unknown_lookups: DefaultDirectRateLimiter,
}

#[derive(Default)]
struct State {
    /// Bumped whenever a cached key is dropped for a change: a lookup that began before must
    /// not cache what it found (the key may have been revoked meanwhile).
    generation: u64,
    /// Whether key changes are heard now.
    listening: bool,
    /// Keyed by the key's hash, so the cache holds no key in clear.
    known: HashMap<Vec<u8>, (Principal, Instant)>,
    unknown: HashMap<Vec<u8>, Instant>,
    /// The live keys, while listening.
    live: Option<HashSet<LiveHash>>,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            unknown_lookups: RateLimiter::direct(Quota::per_second(
                NonZeroU32::new(UNKNOWN_LOOKUPS).expect("not zero"),
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
            if let Some((p, at)) = s.known.get(&hash) {
                if at.elapsed() < ttl {
                    if p.expires_at.is_none_or(|e| e > Utc::now()) {
                        return Ok(Some(p.clone()));
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
                .live
                .as_ref()
                .is_some_and(|live| !live.contains(&live_hash(&hash)));
            if unheard_of && self.unknown_lookups.check().is_err() {
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
                Some(p) => {
                    if let Some(live) = s.live.as_mut() {
                        live.insert(live_hash(&hash));
                    }
                    s.known.insert(hash, (p.clone(), Instant::now()));
                }
                None => {
                    s.unknown.insert(hash, Instant::now());
                }
            }
        }
        Ok(found)
    }

    /// A key was revoked somewhere (`hash`: its hash, when the announcement names it): it is
    /// dropped, and no lookup in flight may cache it again.
    pub fn revoked(&self, hash: Option<&[u8]>) {
        let mut s = self.state.lock().unwrap();
        s.generation += 1;
        match hash {
            Some(h) if h.len() > LIVE_HASH_BYTES => {
                s.known.remove(h);
                if let Some(live) = s.live.as_mut() {
                    live.remove(&live_hash(h));
                }
            }
            _ => s.known.clear(),
        }
    }

    /// A key was made somewhere (`hash`: the first bytes of its hash): it is live.
    pub fn created(&self, hash: &[u8]) {
        if hash.len() == LIVE_HASH_BYTES {
            if let Some(live) = self.state.lock().unwrap().live.as_mut() {
                live.insert(live_hash(hash));
            }
        }
    }

    /// Key changes are heard from now on (with the live keys read after listening began), or
    /// no longer are (`None`). Either way what is cached may have missed a change.
    pub fn listening(&self, live: Option<Vec<Vec<u8>>>) {
        let mut s = self.state.lock().unwrap();
        s.generation += 1;
        s.known.clear();
        s.listening = live.is_some();
        s.live = live.map(|hashes| {
            hashes
                .iter()
                .filter(|h| h.len() >= LIVE_HASH_BYTES)
                .map(|h| live_hash(h))
                .collect()
        });
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            Problem::unauthorized("send an API key as Authorization: Bearer <key>")
        })?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header must be Bearer <key>")
            })?;
        let principal = state
            .keys
            .verify(&state.store, key)
            .await?
            .ok_or_else(|| Problem::unauthorized("unknown or revoked API key"))?;
        // On the request's span (see `request_span`): the tenant, never the key.
        tracing::Span::current().record("tenant_id", tracing::field::display(principal.tenant_id));
        state.rate_limits.check(&principal)?;
        if let Some(route) = parts.extensions.get::<axum::extract::MatchedPath>() {
            state.usage.count(&principal, route.as_str());
        }
        Ok(Auth(principal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_core::store::{generate_key, hash_key};

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
        // Without the live keys (not listening), every new key is looked up...
        assert_eq!(lookups(&cache, &store, &flood[..50]).await, 50);
        // ...with them, a key not among them only within a small budget, even one that
        // shares a live key's prefix.
        let live = generate_key();
        cache.listening(Some(vec![hash_key(&live)]));
        let went = lookups(&cache, &store, &flood).await;
        assert!(went <= 30, "{went} of 500 made-up keys were looked up");
        let same_prefix: Vec<String> = flood
            .iter()
            .map(|k| format!("{}{}", &live[..12], &k[12..]))
            .collect();
        std::thread::sleep(Duration::from_secs(2)); // the budget refills
        let went = lookups(&cache, &store, &same_prefix).await;
        assert!(
            went <= 60,
            "{went} of 500 keys with a live prefix were looked up"
        );
        // The live key itself is looked up (and fails here only because the store is down).
        assert!(cache.verify(&store, &live).await.is_err());
    }
}
