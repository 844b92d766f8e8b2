//! `/v1/vendors`: operators create vendors and hand over their API key.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiJson, AppState, Caller, Items};
use crate::domain::{Timestamp, VendorId, VendorName};
use crate::store::Vendor;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_vendor, list_vendors))
        .routes(routes!(get_vendor))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVendor {
    /// Shown to prospects in the catalog.
    name: String,
}

#[derive(Serialize, ToSchema)]
pub struct VendorView {
    #[schema(value_type = String, format = Uuid)]
    id: VendorId,
    name: String,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

impl From<Vendor> for VendorView {
    fn from(v: Vendor) -> Self {
        VendorView {
            id: v.id,
            name: v.name.as_str().to_string(),
            created_at: v.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CreatedVendor {
    #[serde(flatten)]
    vendor: VendorView,
    /// The vendor's API key. Shown once; only its hash is kept.
    api_key: String,
}

/// Create a vendor (operators only).
#[utoipa::path(post, path = "/v1/vendors", tag = "vendors",
    request_body = NewVendor,
    responses((status = 201, body = CreatedVendor), (status = 409, body = super::Problem)),
    security(("bearer" = [])))]
async fn create_vendor(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewVendor>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    let name = VendorName::parse(&body.name)?;
    let (vendor, key) = state.registry.create_vendor(name).await?;
    let location = format!("/v1/vendors/{}", vendor.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(CreatedVendor {
            vendor: vendor.into(),
            api_key: key.expose().to_string(),
        }),
    ))
}

/// List vendors (operators only); keys are never shown again.
#[utoipa::path(get, path = "/v1/vendors", tag = "vendors",
    responses((status = 200, body = Items<VendorView>)),
    security(("bearer" = [])))]
async fn list_vendors(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Items<VendorView>>, ApiError> {
    caller.require_admin()?;
    let vendors = state.store.vendors().await?;
    Ok(axum::Json(Items::of(vendors)))
}

/// One vendor: operators, or the vendor itself.
#[utoipa::path(get, path = "/v1/vendors/{id}", tag = "vendors",
    responses((status = 200, body = VendorView), (status = 404, body = super::Problem)),
    security(("bearer" = [])))]
async fn get_vendor(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<VendorView>, ApiError> {
    let not_found = || ApiError::NotFound("no such vendor");
    let id = VendorId::parse(&id).map_err(|_| not_found())?;
    let allowed = match caller {
        Caller::Admin => true,
        Caller::Vendor(own) => own == id,
        Caller::Sandbox(_) => return Err(ApiError::Forbidden),
    };
    let vendor = state
        .store
        .vendor(id)
        .await?
        .filter(|_| allowed)
        .ok_or_else(not_found)?;
    Ok(axum::Json(vendor.into()))
}
