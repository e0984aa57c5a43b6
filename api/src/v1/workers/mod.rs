//! Workers in any language: job types a tenant declares (`job_types`), and the lease protocol
//! its remote workers speak (`leases`).

mod job_types;
mod leases;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(job_types::list_job_types))
        .routes(routes!(
            job_types::declare_job_type,
            job_types::get_job_type,
            job_types::delete_job_type
        ))
        .routes(routes!(leases::lease_jobs))
        .routes(routes!(leases::heartbeat_job))
        .routes(routes!(leases::complete_job))
        .routes(routes!(leases::fail_job))
        .routes(routes!(leases::release_job))
        .routes(routes!(leases::list_workers))
}
