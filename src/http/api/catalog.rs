//! `/v1/catalog`: what a prospect can try, without an account.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, AppState, Items, NoQuery};
use crate::domain::manifest::TrialRules;
use crate::domain::{DemoId, UploadRules};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(catalog))
}

#[derive(Serialize, ToSchema)]
pub struct CatalogEntry {
    #[schema(value_type = String, format = Uuid)]
    id: DemoId,
    /// The vendor's name.
    vendor: String,
    slug: String,
    title: String,
    description: String,
    trial: TrialRules,
    upload: UploadRules,
}

/// Enabled demos, for prospects.
#[utoipa::path(get, path = "/v1/catalog", tag = "catalog",
    responses((status = 200, body = Items<CatalogEntry>)))]
async fn catalog(
    State(state): State<AppState>,
    _: NoQuery,
) -> Result<axum::Json<Items<CatalogEntry>>, ApiError> {
    let entries = state
        .store
        .catalog()
        .await?
        .into_iter()
        .map(|(demo, vendor)| CatalogEntry {
            id: demo.id,
            vendor,
            slug: demo.spec.slug.as_str().to_string(),
            title: demo.spec.title,
            description: demo.spec.description,
            trial: demo.spec.trial,
            upload: demo.spec.upload,
        })
        .collect();
    Ok(axum::Json(Items { items: entries }))
}
