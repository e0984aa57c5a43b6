//! The job types a deployment knows, with a check of each type's payload. Built by the
//! worker's registry and handed to the API, so that an unknown type or a payload its handler
//! cannot read is refused with a 422 at submit time, not discovered as a dead job later.

use std::{collections::HashMap, sync::Arc};

use serde_json::Value;

/// What a payload check may need to know of the deployment.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckContext {
    pub allow_private_targets: bool,
}

/// (field, message) pairs; empty when the payload is fine.
pub type PayloadCheck = Arc<dyn Fn(&Value, &CheckContext) -> Vec<(String, String)> + Send + Sync>;

#[derive(Clone, Default)]
pub struct JobCatalog {
    types: HashMap<String, Option<PayloadCheck>>,
}

impl JobCatalog {
    pub fn insert(&mut self, job_type: impl Into<String>, check: Option<PayloadCheck>) {
        self.types.insert(job_type.into(), check);
    }

    pub fn contains(&self, job_type: &str) -> bool {
        self.types.contains_key(job_type)
    }

    pub fn check_payload(
        &self,
        job_type: &str,
        payload: &Value,
        ctx: &CheckContext,
    ) -> Vec<(String, String)> {
        match self.types.get(job_type) {
            Some(Some(check)) => check(payload, ctx),
            _ => Vec::new(),
        }
    }

    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.types.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}
