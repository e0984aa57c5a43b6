//! Tenants' declared job types, with their payload schemas compiled, cached per API process.
//! A submission of a built-in type never looks here; one of another type reads its tenant's
//! declarations at most once per `TTL`, and at once after the tenant changes them: the store
//! announces every change (`JOB_TYPES_CHANNEL`), and the listener drops that tenant's entry.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use conveyor_core::{store::StoreResult, Store};
use conveyor_types::{workers::JobType, FieldError};
use jsonschema::Validator;
use serde_json::Value;
use uuid::Uuid;

use crate::http::contract::{check_against, compile_tenant_schema};

/// How long a tenant's declarations are trusted without an announcement (one lost while the
/// listener reconnects is outlived by this much at most).
const TTL: Duration = Duration::from_secs(30);
/// Tenants kept; past this the cache starts afresh (a bound, not an eviction policy).
const MAX_TENANTS: usize = 10_000;

/// One declared type, ready to check payloads.
pub struct DeclaredType {
    pub spec: JobType,
    validator: Option<Validator>,
}

impl DeclaredType {
    /// Every way `payload` breaks the type's schema, named under `field`.
    pub fn check_payload(&self, payload: &Value, field: &str) -> Vec<FieldError> {
        match &self.validator {
            Some(v) => check_against(v, payload, field),
            None => Vec::new(),
        }
    }
}

/// A tenant's declared types, by name.
#[derive(Default)]
pub struct TenantTypes {
    types: HashMap<String, DeclaredType>,
}

impl TenantTypes {
    pub fn get(&self, name: &str) -> Option<&DeclaredType> {
        self.types.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    fn from_types(types: Vec<JobType>) -> Self {
        let types = types
            .into_iter()
            .map(|spec| {
                let validator = spec.payload_schema.as_ref().and_then(|s| {
                    // Checked when declared; one that no longer compiles (a newer validator
                    // build) checks nothing rather than refusing every submission.
                    compile_tenant_schema(&Value::Object(s.clone()))
                        .inspect_err(|e| {
                            tracing::warn!(error = %e, "a declared payload schema does not compile")
                        })
                        .ok()
                });
                (spec.name.clone(), DeclaredType { spec, validator })
            })
            .collect();
        Self { types }
    }
}

#[derive(Default)]
pub struct DeclaredTypes {
    cache: Mutex<HashMap<Uuid, (Instant, Arc<TenantTypes>)>>,
    /// Bumped by every `forget`: a read that began before one is used, not kept, since it
    /// may predate the change announced.
    forgets: AtomicU64,
}

impl DeclaredTypes {
    /// The tenant's declared types, from the cache or the store.
    pub async fn of(&self, store: &Store, tenant_id: Uuid) -> StoreResult<Arc<TenantTypes>> {
        if let Some((at, types)) = self.cache.lock().unwrap().get(&tenant_id) {
            if at.elapsed() < TTL {
                return Ok(types.clone());
            }
        }
        let before = self.forgets.load(Ordering::SeqCst);
        let types = Arc::new(TenantTypes::from_types(
            store.declared_job_types(tenant_id).await?,
        ));
        let mut cache = self.cache.lock().unwrap();
        if self.forgets.load(Ordering::SeqCst) != before {
            return Ok(types);
        }
        if cache.len() >= MAX_TENANTS {
            cache.clear();
        }
        cache.insert(tenant_id, (Instant::now(), types.clone()));
        Ok(types)
    }

    /// The tenant's declarations changed (here or in another process).
    pub fn forget(&self, tenant_id: Uuid) {
        let mut cache = self.cache.lock().unwrap();
        self.forgets.fetch_add(1, Ordering::SeqCst);
        cache.remove(&tenant_id);
    }

    /// Announcements may have been missed (the listener reconnected).
    pub fn forget_all(&self) {
        let mut cache = self.cache.lock().unwrap();
        self.forgets.fetch_add(1, Ordering::SeqCst);
        cache.clear();
    }
}
