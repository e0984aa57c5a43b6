//! Webhooks: endpoints (with their secrets), the events published to them, their deliveries,
//! and the secret that signs the tenant's job callbacks.

mod callback_secret;
mod deliveries;
mod endpoints;
mod events;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(
            endpoints::create_endpoint,
            endpoints::list_endpoints
        ))
        .routes(routes!(
            endpoints::get_endpoint,
            endpoints::update_endpoint,
            endpoints::delete_endpoint
        ))
        .routes(routes!(endpoints::rotate_endpoint_secret))
        .routes(routes!(deliveries::list_endpoint_deliveries))
        .routes(routes!(deliveries::recover_endpoint_deliveries))
        .routes(routes!(events::publish_event))
        .routes(routes!(deliveries::get_delivery))
        .routes(routes!(deliveries::resend_delivery))
        .routes(routes!(callback_secret::get_callback_secret))
        .routes(routes!(callback_secret::rotate_callback_secret))
}
