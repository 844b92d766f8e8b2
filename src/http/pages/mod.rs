//! The browser: server-rendered pages for prospects (catalog, trial form, trial page with
//! its deletion receipt) and the operators' and vendors' live consoles. Templates live in
//! `templates/`, compiled in by askama (escaped by default); the stylesheet and the small
//! scripts in `static/` are compiled in too, so nothing is loaded from another site.
//! Handlers here parse and authorize like the API's (through the same door, `auth`), then
//! call the same services.

mod catalog;
mod console;
mod trial;

use askama::Template;
use axum::Router;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;

use super::{ApiError, AppState, Caller, auth, intake, session};
use crate::domain::{Timestamp, VendorId};

pub fn router(max_upload_bytes: u64) -> Router<AppState> {
    Router::new()
        .merge(catalog::router())
        .merge(trial::router(max_upload_bytes))
        .merge(console::router())
        .route("/assets/{name}", get(asset))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                 base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            ),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
}

/// The stylesheet and scripts, compiled into the binary.
async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static str, &str) = match name.as_str() {
        "app.css" => (include_str!("../../../static/app.css"), "text/css"),
        "format.js" => (include_str!("../../../static/format.js"), "text/javascript"),
        "upload.js" => (include_str!("../../../static/upload.js"), "text/javascript"),
        "trial.js" => (include_str!("../../../static/trial.js"), "text/javascript"),
        "console.js" => (
            include_str!("../../../static/console.js"),
            "text/javascript",
        ),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, format!("{kind}; charset=utf-8")),
            // Short: a new release is picked up within minutes without versioned names.
            (header::CACHE_CONTROL, "public, max-age=300".to_string()),
        ],
        body,
    )
        .into_response()
}

/// Renders a page; a template that fails to render is a bug, answered 500.
fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Html(html),
        )
            .into_response(),
        Err(err) => {
            tracing::error!(%err, "a page did not render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    detail: String,
    back: Option<String>,
}

/// An error on a page route: the same errors as the API, shown as a page, with a way back
/// to the form it came from, if any.
pub struct PageError(ApiError, Option<String>);

impl<E: Into<ApiError>> From<E> for PageError {
    fn from(err: E) -> Self {
        PageError(err.into(), None)
    }
}

impl PageError {
    /// The page offers to go back to `form` (a demo's page, where the prospect fixes what
    /// was refused) rather than to the catalog.
    pub fn back_to(self, form: Option<String>) -> PageError {
        PageError(self.0, form)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let page = ErrorPage {
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error"),
            detail: self.0.to_string(),
            back: self.1,
        };
        let mut response = render(&page);
        *response.status_mut() = status;
        response
    }
}

/// A vendor's name as pages show it (empty if the vendor is gone).
async fn vendor_name(state: &AppState, id: VendorId) -> Result<String, ApiError> {
    Ok(state
        .store
        .vendor(id)
        .await?
        .map(|v| v.name.as_str().to_string())
        .unwrap_or_default())
}

/// "15 minutes", "1 hour 30 minutes": trial lengths as people say them.
pub fn spoken_duration(seconds: u64) -> String {
    let (hours, minutes, secs) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    let unit = |n: u64, one: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {one}s")
        }
    };
    let mut parts = Vec::new();
    if hours > 0 {
        parts.push(unit(hours, "hour"));
    }
    if minutes > 0 {
        parts.push(unit(minutes, "minute"));
    }
    if secs > 0 || parts.is_empty() {
        parts.push(unit(secs, "second"));
    }
    parts.join(" ")
}

/// "205 KiB", "1.5 MiB": sizes as every page shows them, the same rule as the scripts'
/// `size` (static/*.js) and the CSV Explorer's: binary units, one decimal under 10 (none
/// when it is .0), whole numbers from 10. `exact_bytes` says the same size to the byte.
pub fn spoken_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Rounded as shown: 1023.7 KiB reads "1 MiB", not "1024 KiB".
    while unit + 1 < UNITS.len() && (value * 10.0).round() / 10.0 >= 1023.5 {
        value /= 1024.0;
        unit += 1;
    }
    let tenths = (value * 10.0).round() / 10.0;
    let shown = if tenths < 10.0 && tenths.fract() != 0.0 {
        format!("{tenths:.1}")
    } else {
        format!("{}", value.round())
    };
    format!("{shown} {}", UNITS[unit])
}

/// "52,428,800 bytes": a size to the byte (hover titles, the deletion receipt).
pub fn exact_bytes(bytes: u64) -> String {
    let digits = bytes.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 6);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out.push_str(if bytes == 1 { " byte" } else { " bytes" });
    out
}

/// A moment as shown on pages without scripts: UTC, to the second, saying so. Pages put it
/// in `<time datetime=…>`, which their script rewrites to the browser's clock and zone.
pub fn shown_time(at: Timestamp) -> String {
    let text = at.to_rfc3339();
    // 2026-11-29T01:02:03.456Z → 2026-11-29 01:02:03 UTC
    format!("{} {} UTC", &text[..10], &text[11..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_naturally() {
        assert_eq!(spoken_duration(900), "15 minutes");
        assert_eq!(spoken_duration(3600), "1 hour");
        assert_eq!(spoken_duration(5400), "1 hour 30 minutes");
        assert_eq!(spoken_duration(61), "1 minute 1 second");
        assert_eq!(spoken_bytes(999), "999 bytes");
        assert_eq!(spoken_bytes(1023), "1023 bytes");
        assert_eq!(spoken_bytes(1024), "1 KiB");
        assert_eq!(spoken_bytes(1536), "1.5 KiB");
        assert_eq!(spoken_bytes(1300), "1.3 KiB");
        assert_eq!(spoken_bytes(210_329), "205 KiB");
        assert_eq!(spoken_bytes(1_048_000), "1023 KiB");
        assert_eq!(spoken_bytes(1_048_500), "1 MiB");
        assert_eq!(spoken_bytes(1_572_864), "1.5 MiB");
        assert_eq!(spoken_bytes(10_380_902), "9.9 MiB");
        assert_eq!(spoken_bytes(52_428_800), "50 MiB");
        assert_eq!(spoken_bytes(3 << 30), "3 GiB");
        assert_eq!(exact_bytes(52_428_800), "52,428,800 bytes");
        assert_eq!(exact_bytes(999), "999 bytes");
        assert_eq!(exact_bytes(1), "1 byte");
        assert_eq!(
            shown_time(Timestamp::from_millis(0)),
            "1970-01-01 00:00:00 UTC"
        );
    }
}
