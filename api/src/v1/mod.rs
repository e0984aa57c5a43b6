//! The HTTP API, a module per resource; each registers its routes with their OpenAPI
//! descriptions, so the document is built from what is routed.

pub mod health;
pub mod jobs;
pub mod keys;
pub mod operators;
pub mod sagas;
pub mod schedules;
pub mod usage;
pub mod webhooks;
pub mod workers;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

/// Every route of the API with its description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(health::routes())
        .merge(jobs::routes())
        .merge(operators::routes())
        .merge(sagas::routes())
        .merge(schedules::routes())
        .merge(webhooks::routes())
        .merge(keys::routes())
        .merge(usage::routes())
        .merge(workers::routes())
}
