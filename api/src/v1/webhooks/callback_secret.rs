//! The secret that signs the tenant's job and saga callbacks.

use axum::{extract::State, Json};
use conveyor_core::{signing::Secret, Scope};
use conveyor_types::webhooks::SigningSecret;

use crate::{
    auth::Auth,
    http::problem::{ApiResult, Problem},
    AppState,
};

/// The secret that signs the tenant's callbacks.
#[utoipa::path(
    get,
    path = "/v1/callback-secret",
    tag = "webhooks",
    responses(
        (status = 200, description = "The secret that signs this tenant's job callbacks", body = SigningSecret),
    ),
)]
pub(crate) async fn get_callback_secret(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<Json<SigningSecret>> {
    let p = auth.require(Scope::Admin)?;
    let secret = state
        .store
        .callback_secret(p.tenant_id)
        .await?
        .ok_or_else(|| Problem::not_found("no such tenant"))?;
    Ok(Json(SigningSecret { secret }))
}

/// A new callback secret; the old one keeps signing, beside it, for the grace period.
#[utoipa::path(
    post,
    path = "/v1/callback-secret/rotate",
    tag = "webhooks",
    responses(
        (status = 200, description = "The new callback secret", body = SigningSecret),
    ),
)]
pub(crate) async fn rotate_callback_secret(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<Json<SigningSecret>> {
    let p = auth.require(Scope::Admin)?;
    let secret = Secret::generate();
    state
        .store
        .rotate_callback_secret(p.tenant_id, &secret, state.secret_rotation_grace)
        .await?;
    Ok(Json(SigningSecret { secret }))
}
