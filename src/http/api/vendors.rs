//! `/v1/vendors`: operators create vendors and hand over their API key; a vendor (or an
//! operator) sets its webhook URL and reads how its deliveries went.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiJson, ApiQuery, AppState, Caller, Items, Page, Problem, page_of};
use crate::domain::page::{self, Limit};
use crate::domain::webhook::DeliveryRecord;
use crate::domain::{Timestamp, Vendor, VendorId, VendorName, WebhookUrl};
use crate::webhooks::WebhookRefused;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_vendor, list_vendors))
        .routes(routes!(get_vendor, patch_vendor))
        .routes(routes!(vendor_deliveries))
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
    /// Where lifecycle changes of the vendor's sandboxes are POSTed (shown to operators
    /// and the vendor itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_url: Option<String>,
    /// The key of the deliveries' `Testdrive-Signature`. Shown once, when the URL is first
    /// set; stored only sealed.
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_secret: Option<String>,
}

impl From<Vendor> for VendorView {
    fn from(v: Vendor) -> Self {
        VendorView {
            id: v.id,
            name: v.name.as_str().to_string(),
            created_at: v.created_at,
            webhook_url: None,
            webhook_secret: None,
        }
    }
}

/// The vendor `raw` names, if the caller may see it: operators, or the vendor itself.
pub(super) async fn own_vendor(
    state: &AppState,
    caller: Caller,
    raw: &str,
) -> Result<Vendor, ApiError> {
    let not_found = || ApiError::NotFound("no such vendor");
    let id = VendorId::parse(raw).map_err(|_| not_found())?;
    let allowed = match caller {
        Caller::Admin => true,
        Caller::Vendor(own) => own == id,
        Caller::Sandbox(_) => return Err(ApiError::Forbidden),
    };
    state
        .store
        .vendor(id)
        .await?
        .filter(|_| allowed)
        .ok_or_else(not_found)
}

async fn with_webhook(state: &AppState, vendor: Vendor) -> Result<VendorView, ApiError> {
    let webhook = state.store.vendor_webhook(vendor.id).await?;
    let mut view = VendorView::from(vendor);
    view.webhook_url = webhook.map(|(url, _)| url);
    Ok(view)
}

#[derive(Serialize, ToSchema)]
pub struct CreatedVendor {
    #[serde(flatten)]
    vendor: VendorView,
    /// The vendor's API key. Shown once; only its hash is kept.
    api_key: String,
}

/// Create a vendor (operators only).
#[utoipa::path(post, path = "/v1/vendors", tag = "vendors", request_body = NewVendor,
    responses((status = 201, body = CreatedVendor), (status = 409, body = Problem)),
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// At most this many (default 100, at most 1000).
    limit: Option<String>,
    /// Where the page starts: taken from the previous page's `next`.
    after: Option<String>,
}

/// List vendors (operators only), oldest first; keys are never shown again.
#[utoipa::path(get, path = "/v1/vendors", tag = "vendors", params(ListParams),
    responses((status = 200, body = Page<VendorView>)), security(("bearer" = [])))]
async fn list_vendors(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<Page<VendorView>>, ApiError> {
    caller.require_admin()?;
    let limit = Limit::parse(params.limit.as_deref())?;
    let after = page::parse_after(params.after.as_deref(), VendorId::parse)?;
    let vendors = page_of(state.store.vendors().await?, |v| v.id, after, limit);
    let vendors = vendors.into_iter().map(VendorView::from).collect();
    Ok(axum::Json(Page::of(
        vendors,
        limit,
        "/v1/vendors",
        &[],
        |v| v.id.to_string(),
    )))
}

/// One vendor: operators, or the vendor itself.
#[utoipa::path(get, path = "/v1/vendors/{id}", tag = "vendors",
    responses((status = 200, body = VendorView), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_vendor(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<VendorView>, ApiError> {
    let vendor = own_vendor(&state, caller, &id).await?;
    Ok(axum::Json(with_webhook(&state, vendor).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VendorPatch {
    /// An `http(s)` URL, or `null` for no webhook. Its host must resolve, and only to public
    /// addresses: a literal IP in any spelling is judged as the address it is; loopback,
    /// private and link-local ones pass only where the deployment allows them, other
    /// special-purpose ones never. One answer (`422`) for every refusal.
    #[schema(value_type = Option<String>)]
    #[serde(default, deserialize_with = "present")]
    webhook_url: Option<Option<String>>,
}

/// A field that is present, `null` included (`Some(None)`); absent is `None`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Set the vendor's webhook URL: operators, or the vendor itself. The signing secret is in
/// the answer the first time a URL is set, and never again.
#[utoipa::path(patch, path = "/v1/vendors/{id}", tag = "vendors", request_body = VendorPatch,
    responses((status = 200, body = VendorView), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn patch_vendor(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<VendorPatch>,
) -> Result<axum::Json<VendorView>, ApiError> {
    let vendor = own_vendor(&state, caller, &id).await?;
    let mut secret = None;
    if let Some(url) = patch.webhook_url {
        let url = url.as_deref().map(WebhookUrl::parse).transpose()?;
        secret = state
            .webhooks
            .set_url(vendor.id, url.as_ref())
            .await
            .map_err(|refused| match refused {
                WebhookRefused::Destination(why) => ApiError::invalid("webhook_url", why),
                WebhookRefused::Store(err) => err.into(),
            })?;
    }
    let mut view = with_webhook(&state, vendor).await?;
    view.webhook_secret = secret;
    Ok(axum::Json(view))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesParams {
    /// At most this many, newest first (default 50, at most 500).
    limit: Option<u32>,
}

/// The vendor's webhook deliveries, newest first: attempts, the last status or error, and
/// when each was delivered, will be tried again, or was given up.
#[utoipa::path(get, path = "/v1/vendors/{id}/deliveries", tag = "vendors", params(DeliveriesParams),
    responses((status = 200, body = Items<DeliveryRecord>), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn vendor_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<DeliveriesParams>,
) -> Result<axum::Json<Items<DeliveryRecord>>, ApiError> {
    let vendor = own_vendor(&state, caller, &id).await?;
    let limit = params.limit.unwrap_or(50).clamp(1, 500);
    let items = state.store.deliveries(vendor.id, limit).await?;
    Ok(axum::Json(Items { items }))
}
