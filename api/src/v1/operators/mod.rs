//! What operators do: replay dead letters (with a dry run), read the audit log, watch and
//! pause queues.

mod audit_log;
mod dead_letters;
mod queues;

use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) use dead_letters::{replay_dead_letters_as, replay_job_as};
pub(crate) use queues::set_paused;

use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(dead_letters::replay_job))
        .routes(routes!(dead_letters::list_dead_letters))
        .routes(routes!(dead_letters::replay_dead_letters))
        .routes(routes!(audit_log::list_audit_log))
        .routes(routes!(queues::list_queues))
        .routes(routes!(queues::pause_queue))
        .routes(routes!(queues::resume_queue))
}
