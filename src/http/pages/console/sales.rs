//! The vendor console's side of the sales conversation: inviting a named prospect (a plain
//! form, so it works without scripts), the invitations with when each was opened and used,
//! what prospects answered and asked, and each demo's funnel over a chosen period, drawn
//! on the server as SVG (nothing is loaded from elsewhere).

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, AppState, Caller, Console, PageError, shown_time};
use crate::domain::conversation::InvitationRequest;
use crate::domain::{DemoId, Funnel, InvitationId, Question, SandboxEvent, Timestamp, VendorId};
use crate::http::invitations::{invitation_url, invite};
use crate::http::session;

/// Invitations and conversations the console lists.
const LISTED: u32 = 50;

/// The periods a funnel can be drawn over: (query value, label, days).
const PERIODS: [(&str, &str, i64); 4] = [
    ("1d", "24 hours", 1),
    ("7d", "7 days", 7),
    ("30d", "30 days", 30),
    ("90d", "90 days", 90),
];
const DEFAULT_PERIOD: &str = "30d";

/// One bar of a funnel chart, placed in SVG units.
pub struct Bar {
    pub key: &'static str,
    pub label: &'static str,
    pub count: u64,
    pub y: u32,
    pub text_y: u32,
    pub width: u32,
    /// Trials in percent of page views, every later step in percent of trials ("" for
    /// page views, and when there is nothing to divide by). The steps after a trial
    /// started are not a sequence (a prospect may ask for a person without extending),
    /// so each is measured against the trials.
    pub rate: String,
}

pub struct FunnelChart {
    pub demo_id: String,
    pub title: String,
    pub height: u32,
    pub bars: Vec<Bar>,
}

/// Widths and heights of the chart, in SVG units.
const BAR_MAX: u32 = 300;
const ROW: u32 = 26;

impl FunnelChart {
    fn new(demo_id: DemoId, title: String, funnel: &Funnel) -> FunnelChart {
        let steps = funnel.steps();
        let top = steps.iter().map(|s| s.2).max().unwrap_or(0).max(1);
        let bars = steps
            .iter()
            .enumerate()
            .map(|(i, &(key, label, count))| {
                let of = match i {
                    0 => 0,
                    1 => funnel.page_views,
                    _ => funnel.trials,
                };
                let rate = match of {
                    0 => String::new(),
                    of => format!("{}%", (count * 100 + of / 2) / of),
                };
                // A step with any count shows at least a sliver.
                let width = ((count * u64::from(BAR_MAX)) / top) as u32;
                let width = if count > 0 { width.max(2) } else { 0 };
                let y = i as u32 * ROW;
                Bar {
                    key,
                    label,
                    count,
                    y,
                    text_y: y + ROW / 2 + 4,
                    width,
                    rate,
                }
            })
            .collect();
        FunnelChart {
            demo_id: demo_id.to_string(),
            title,
            height: steps.len() as u32 * ROW,
            bars,
        }
    }
}

pub struct InvitationRow {
    pub id: String,
    pub url: String,
    pub company: String,
    pub email: String,
    pub demo: String,
    pub created: String,
    pub expires: String,
    pub opened: String,
    pub used: String,
    pub sandbox_id: String,
    pub status: &'static str,
}

pub struct ConversationRow {
    pub at: String,
    pub at_rfc3339: String,
    pub sandbox_id: String,
    pub demo: String,
    pub who: String,
    /// `feedback` or `contact_requested`.
    pub kind: &'static str,
    /// A contact request's message, or each answered question with its answer.
    pub lines: Vec<(String, String)>,
}

/// What the vendor console shows of the conversation.
pub struct SalesView {
    pub period: &'static str,
    pub periods: Vec<(&'static str, &'static str)>,
    pub charts: Vec<FunnelChart>,
    pub demos: Vec<(String, String)>,
    pub invitations: Vec<InvitationRow>,
    pub conversations: Vec<ConversationRow>,
    /// The link of the invitation just made, to copy.
    pub invited: Option<String>,
}

fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn shown(at: Option<Timestamp>) -> String {
    at.map(shown_time).unwrap_or_default()
}

/// The vendor's conversation, as of now; `query` picks the funnel's period (`?period=`)
/// and names an invitation just made (`?invited=`).
pub async fn view(
    state: &AppState,
    vendor: VendorId,
    query: Option<&str>,
) -> Result<SalesView, ApiError> {
    let now = Timestamp::now();
    let chosen = query_value(query, "period");
    let (period, _, days) = PERIODS
        .iter()
        .copied()
        .find(|(key, _, _)| chosen.as_deref() == Some(*key))
        .or_else(|| PERIODS.iter().copied().find(|p| p.0 == DEFAULT_PERIOD))
        .expect("the default period is listed");
    let since = Timestamp::from_millis(now.millis() - days * 24 * 3600 * 1000);
    let demos = state.store.demos(Some(vendor)).await?;
    let titles: HashMap<DemoId, String> =
        demos.iter().map(|d| (d.id, d.spec.title.clone())).collect();
    let mut charts = Vec::with_capacity(demos.len());
    for demo in &demos {
        let funnel = state.store.funnel(demo.id, since).await?;
        charts.push(FunnelChart::new(demo.id, demo.spec.title.clone(), &funnel));
    }
    let invitations = state
        .store
        .invitations(Some(vendor), LISTED)
        .await?
        .into_iter()
        .map(|i| InvitationRow {
            id: i.id.to_string(),
            url: invitation_url(state, i.id),
            status: i.state(now).as_str(),
            company: i.company,
            email: i.email.unwrap_or_default(),
            demo: titles.get(&i.demo_id).cloned().unwrap_or_default(),
            created: shown_time(i.created_at),
            expires: shown_time(i.expires_at),
            opened: shown(i.opened_at),
            used: shown(i.used_at),
            sandbox_id: i.sandbox_id.map(|s| s.to_string()).unwrap_or_default(),
        })
        .collect();
    let conversations = state
        .store
        .conversations(Some(vendor), LISTED)
        .await?
        .into_iter()
        .filter_map(|(sandbox, record)| {
            let label = |questions: &[Question], id: &str| {
                questions
                    .iter()
                    .find(|q| q.id == id)
                    .map_or_else(|| id.to_string(), |q| q.label.clone())
            };
            let (kind, lines) = match &record.event {
                SandboxEvent::Feedback { answers } => (
                    "feedback",
                    answers
                        .iter()
                        .map(|(id, answer)| {
                            (label(&sandbox.spec.exit_questions, id), answer.to_string())
                        })
                        .collect(),
                ),
                SandboxEvent::ContactRequested { message } => (
                    "contact_requested",
                    vec![("Message".to_string(), message.as_str().to_string())],
                ),
                _ => return None,
            };
            let prospect = &sandbox.prospect;
            let who = [prospect.company.as_deref(), prospect.email.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" · ");
            Some(ConversationRow {
                at: shown_time(record.at),
                at_rfc3339: record.at.to_rfc3339(),
                sandbox_id: sandbox.id.to_string(),
                demo: sandbox.spec.title.clone(),
                who: if who.is_empty() {
                    "A prospect who gave no name".to_string()
                } else {
                    who
                },
                kind,
                lines,
            })
        })
        .collect();
    let invited = query_value(query, "invited")
        .and_then(|raw| InvitationId::parse(&raw).ok())
        .map(|id| invitation_url(state, id));
    Ok(SalesView {
        period,
        periods: PERIODS
            .iter()
            .map(|(key, label, _)| (*key, *label))
            .collect(),
        charts,
        demos: demos
            .into_iter()
            .map(|d| (d.id.to_string(), d.spec.title))
            .collect(),
        invitations,
        conversations,
        invited,
    })
}

/// The console's invitation form, as the browser sends it.
#[derive(Deserialize)]
pub struct InviteForm {
    demo_id: String,
    company: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    note: String,
    /// Days the link stays open.
    #[serde(default)]
    days: String,
    /// Trials the link may start (a failed one does not count).
    #[serde(default)]
    trials: String,
}

/// `POST /vendor/invitations`: makes the invitation and goes back to the console, which
/// shows its link; a refusal is a page with the way back. The form carries the page key in
/// its action's query.
pub async fn invite_from_console(
    state: AppState,
    headers: HeaderMap,
    uri: Uri,
    form: InviteForm,
) -> Result<Response, PageError> {
    invite_or_refuse(state, headers, uri, form)
        .await
        .map_err(|err| PageError::from(err).back_to(Some("/vendor#invitations".to_string())))
}

async fn invite_or_refuse(
    state: AppState,
    headers: HeaderMap,
    uri: Uri,
    form: InviteForm,
) -> Result<Response, ApiError> {
    session::same_origin(&headers)?;
    let caller = Console::Vendor
        .caller(&state, &headers, uri.query())
        .await?;
    let number = |field: &str, raw: &str| match raw.trim() {
        "" => Ok(None),
        raw => raw
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::invalid(field, "must be a whole number")),
    };
    let days = number("days", &form.days)?;
    let max_trials = number("trials", &form.trials)?;
    let request = InvitationRequest {
        demo_id: Some(form.demo_id),
        vendor_id: None,
        company: Some(form.company),
        email: Some(form.email),
        note: Some(form.note),
        expires_in_seconds: days.map(|d| d.saturating_mul(24 * 3600)),
        max_trials,
    };
    debug_assert!(matches!(caller, Caller::Vendor(_)));
    let invitation = invite(&state, caller, &request).await?;
    Ok((
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            format!("/vendor?invited={}#invitations", invitation.id),
        )],
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_step_and_say_each_rate() {
        let funnel = Funnel {
            page_views: 40,
            trials: 10,
            ready: 9,
            opened: 0,
            ..Funnel::default()
        };
        let chart = FunnelChart::new(DemoId::new(), "Demo".into(), &funnel);
        assert_eq!(chart.bars.len(), 8);
        assert_eq!(chart.bars[0].width, BAR_MAX);
        assert_eq!(chart.bars[1].width, BAR_MAX / 4);
        assert_eq!(chart.bars[0].rate, "");
        assert_eq!(chart.bars[1].rate, "25%");
        assert_eq!(chart.bars[2].rate, "90%");
        assert_eq!(
            (chart.bars[3].width, chart.bars[3].rate.as_str()),
            (0, "0%")
        );
        // Every later step against the trials, not the step before.
        assert_eq!(chart.bars[4].rate, "0%");
        // Nothing at all draws nothing, and divides by nothing.
        let empty = FunnelChart::new(DemoId::new(), "Demo".into(), &Funnel::default());
        assert!(empty.bars.iter().all(|b| b.width == 0 && b.rate.is_empty()));
    }
}
