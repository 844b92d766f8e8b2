//! What a vendor may run: `/v1/vendors/{id}/registries` (its credentials for registries,
//! set by the vendor or operators, the password never shown again) and
//! `/v1/vendors/{id}/images` (Engine-only images operators give it).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::vendors::own_vendor;
use super::{ApiError, ApiJson, AppState, Caller, Items, NoQuery, Problem};
use crate::domain::{ImageGrant, RegistryLogin, RegistryServer, StoredLogin, Timestamp};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_registries))
        .routes(routes!(put_registry, delete_registry))
        .routes(routes!(give_image, list_images))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLogin {
    /// 1 to 255 bytes.
    username: String,
    /// 1 to 4096 bytes. Stored encrypted; never shown again.
    password: String,
}

/// A registry the vendor stored credentials for (never the password).
#[derive(Serialize, ToSchema)]
pub struct LoginView {
    /// `host[:port]`.
    server: String,
    username: String,
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
}

impl From<StoredLogin> for LoginView {
    fn from(login: StoredLogin) -> Self {
        LoginView {
            server: login.server.to_string(),
            username: login.username,
            updated_at: login.updated_at,
        }
    }
}

/// Store the vendor's credentials for a registry (`host[:port]`, like
/// `registry.example.com`), replacing any earlier ones: the vendor itself, or operators.
/// Demos of that registry's images are pulled with them.
#[utoipa::path(put, path = "/v1/vendors/{id}/registries/{server}", tag = "vendors",
    request_body = NewLogin,
    responses((status = 204), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn put_registry(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, server)): Path<(String, String)>,
    ApiJson(body): ApiJson<NewLogin>,
) -> Result<StatusCode, ApiError> {
    let vendor = own_vendor(&state, caller, &id).await?;
    let server = RegistryServer::parse(&server)?;
    let login = RegistryLogin::parse(body.username, body.password)?;
    state.registry.put_login(vendor.id, server, login).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The registries the vendor stored credentials for; passwords are never shown.
#[utoipa::path(get, path = "/v1/vendors/{id}/registries", tag = "vendors",
    responses((status = 200, body = Items<LoginView>), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn list_registries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    _: NoQuery,
) -> Result<axum::Json<Items<LoginView>>, ApiError> {
    let vendor = own_vendor(&state, caller, &id).await?;
    Ok(axum::Json(Items::of(state.store.logins(vendor.id).await?)))
}

/// Forget the vendor's credentials for a registry.
#[utoipa::path(delete, path = "/v1/vendors/{id}/registries/{server}", tag = "vendors",
    responses((status = 204), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn delete_registry(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, server)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let vendor = own_vendor(&state, caller, &id).await?;
    let server = RegistryServer::parse(&server)?;
    if !state.store.delete_login(vendor.id, &server).await? {
        return Err(ApiError::NotFound(
            "the vendor has no credentials for this registry",
        ));
    }
    tracing::info!(vendor_id = %vendor.id, %server, "registry credentials forgotten");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGrant {
    /// An image only on the Docker Engine (`name:tag`); a registry image is pulled with the
    /// vendor's credentials instead (`422`).
    image: String,
}

/// Give an Engine-only image to the vendor (operators only): the vendor may then name it in
/// its demos. `201` the first time, `200` with the same answer after. An image may be given
/// to several vendors.
#[utoipa::path(post, path = "/v1/vendors/{id}/images", tag = "vendors", request_body = NewGrant,
    responses((status = 201, body = ImageGrant), (status = 200, body = ImageGrant),
        (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn give_image(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewGrant>,
) -> Result<(StatusCode, axum::Json<ImageGrant>), ApiError> {
    caller.require_admin()?;
    let vendor = own_vendor(&state, caller, &id).await?;
    let (grant, new) = state.registry.give_image(vendor.id, &body.image).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(grant)))
}

/// The Engine-only images given to the vendor: operators, or the vendor itself.
#[utoipa::path(get, path = "/v1/vendors/{id}/images", tag = "vendors",
    responses((status = 200, body = Items<ImageGrant>), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn list_images(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    _: NoQuery,
) -> Result<axum::Json<Items<ImageGrant>>, ApiError> {
    let vendor = own_vendor(&state, caller, &id).await?;
    Ok(axum::Json(Items {
        items: state.store.images_given(vendor.id).await?,
    }))
}
