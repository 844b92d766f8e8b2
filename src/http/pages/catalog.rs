//! `/`: the demos a prospect can try, and `/demos/{id}`: one demo with its trial form (or,
//! while its image is missing, a word that it is not available right now).

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;

use super::auth::demo_id;
use super::{ApiError, AppState, PageError, render, spoken_bytes, spoken_duration, vendor_name};
use crate::domain::Demo;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(catalog))
        .route("/demos/{id}", get(demo_page))
}

/// A demo as the pages show it.
struct DemoCard {
    id: String,
    title: String,
    vendor: String,
    description: String,
    /// "15 minutes (extendable to 1 hour)".
    trial: String,
    /// "CSV or TSV · up to 3 files · 50 MiB in all".
    files: String,
    /// For the file picker: ".csv,.tsv" (empty: any type).
    accept: String,
    extensions: String,
    max_bytes: u64,
    max_files: u32,
    /// Trial lengths the prospect may choose: (seconds, label), the default first.
    windows: Vec<(u32, String)>,
}

impl DemoCard {
    fn new(demo: Demo, vendor: String) -> DemoCard {
        let spec = demo.spec;
        let trial = &spec.trial;
        let trial_text = if trial.max_seconds > trial.seconds {
            format!(
                "{} (extendable to {})",
                spoken_duration(trial.seconds.into()),
                spoken_duration(trial.max_seconds.into())
            )
        } else {
            spoken_duration(trial.seconds.into())
        };
        let upload = &spec.upload;
        let kinds = if upload.extensions.is_empty() {
            "Any type of file".to_string()
        } else {
            let upper: Vec<String> = upload
                .extensions
                .iter()
                .map(|e| e.to_ascii_uppercase())
                .collect();
            match upper.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                _ => upper.join(""),
            }
        };
        let count = if upload.max_files == 1 {
            "one file".to_string()
        } else {
            format!("up to {} files", upload.max_files)
        };
        let files = format!(
            "{kinds} · {count} · {} in all",
            spoken_bytes(upload.max_bytes)
        );
        let mut windows = vec![(trial.seconds, spoken_duration(trial.seconds.into()))];
        for longer in [
            trial.seconds.saturating_mul(2),
            trial.seconds.saturating_mul(4),
        ] {
            if longer <= trial.max_seconds {
                windows.push((longer, spoken_duration(longer.into())));
            }
        }
        DemoCard {
            id: demo.id.to_string(),
            title: spec.title,
            vendor,
            description: spec.description,
            trial: trial_text,
            files,
            accept: upload
                .extensions
                .iter()
                .map(|e| format!(".{e}"))
                .collect::<Vec<_>>()
                .join(","),
            extensions: upload.extensions.join(","),
            max_bytes: upload.max_bytes,
            max_files: upload.max_files,
            windows,
        }
    }
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogPage {
    demos: Vec<DemoCard>,
}

async fn catalog(State(state): State<AppState>) -> Result<Response, PageError> {
    let demos = state
        .store
        .catalog()
        .await?
        .into_iter()
        .map(|(demo, vendor)| DemoCard::new(demo, vendor))
        .collect();
    Ok(render(&CatalogPage { demos }))
}

#[derive(Template)]
#[template(path = "demo.html")]
struct DemoPage {
    demo: DemoCard,
    /// Why no trial can start now (the demo's image is missing), instead of the form.
    unavailable: Option<&'static str>,
}

async fn demo_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let demo = state
        .store
        .demo(demo_id(&id)?)
        .await?
        .filter(|d| d.enabled)
        .ok_or(ApiError::NotFound("no such demo"))?;
    let vendor = vendor_name(&state, demo.vendor_id).await?;
    let unavailable = demo.image_status.unavailable_because();
    Ok(render(&DemoPage {
        demo: DemoCard::new(demo, vendor),
        unavailable,
    }))
}
