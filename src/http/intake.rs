//! Trial intake: the one way a trial starts from a form, for the API (`POST /v1/sandboxes`)
//! and the browser's demo page (`POST /trials`) alike. Refuse early, before a byte of the
//! upload is read: a form another site's page sent, a client over its rate or its share of
//! the places, the Engine down, no place, too many uploads at once. Then read the form in
//! order with a reader that bounds everything it holds (`multipart`): at most
//! `BEFORE_DEMO` bytes until the form names its demo, then that demo's upload limit. Naming
//! the demo reserves its whole upload limit in the spool's budget and begins the trial
//! (`Lifecycle::begin`: its sandbox is recorded and made while the files arrive), and each
//! file streams into the sandbox's upload directory under the demo's rules; a client that
//! stops sending is cut off, and a refused upload is abandoned with everything made for
//! it. A file named as text is judged by its first bytes before any of it is written (a
//! workbook renamed `.csv` is refused in words, `tabular::sniff`) and followed to its end
//! for UTF-8. Then the spool goes to the lifecycle, which renames the files into place.
//!
//! The spool's disk keeps a floor of free space (`SpoolDisk`): a request whose
//! Content-Length would take the disk under it is refused before its body is read, and any
//! upload stops as soon as the disk goes under it — `507` with `Retry-After`, in plain words,
//! noted among the deployment's events at most once a minute.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use tabular::sniff::{self, Content};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::client::{ClientAddress, ClientKey};
use super::invitations::open_invitation;
use super::multipart::{self, Limits, MultipartError, MultipartReader};
use super::origins::url_parts;
use super::{ApiError, AppState};
use crate::domain::conversation::MAX_ANSWER_CHARS;
use crate::domain::token::IssuedToken;
use crate::domain::{
    Answers, Demo, DemoId, Invitation, InvitationId, Prospect, Sandbox, ServiceEvent, TrialWindow,
    UploadName,
};
use crate::lifecycle::{Begun, Introduction, Lifecycle};
use crate::spool::{DiskClaim, Spool, SpoolBudget, SpoolDisk, SpoolError};
use crate::store::Store;

/// What a form may send before it names its demo (which is the first field of the demo
/// page's form): until then the service does not know how much it should take.
pub(crate) const BEFORE_DEMO: u64 = 64 * 1024;

/// Room for the form's text fields and part headers besides the demo's files.
const FORM_SLACK: u64 = 1 << 20;

/// One part's header block.
const PART_HEADER_BYTES: usize = 8 * 1024;

/// Parts in one form: a few text fields and up to the policy's `max_files` files.
const MAX_PARTS: usize = 1000;

/// Answers to the demo's questions come as `q.<question id>`.
const ANSWER_PREFIX: &str = "q.";

/// Answer fields in one form (a demo asks at most 20 questions).
const MAX_ANSWERS: usize = 40;

/// The body limit of a route that takes a trial's form: the largest upload any demo may
/// allow, plus the form's other fields. The form reader holds the request to less (see
/// `BEFORE_DEMO`, and each demo's own limit).
pub fn body_limit(max_upload_bytes: u64) -> usize {
    usize::try_from(max_upload_bytes.saturating_add(FORM_SLACK)).unwrap_or(usize::MAX)
}

/// A full disk is noted among the deployment's events at most this often, so that a burst
/// of refusals does not bury the rest.
const DISK_FULL_NOTED_EVERY: Duration = Duration::from_secs(60);

/// Intake's limits, from the configuration.
#[derive(Clone, Debug)]
pub struct IntakeSettings {
    /// Uploads read at once, all clients together.
    pub max_uploads: usize,
    /// Creations in progress at once from one client: each reserves its demo's whole
    /// upload limit, so without this one slow client could hold the whole spool budget.
    pub max_uploads_per_client: u64,
    /// How long an upload may send nothing.
    pub idle: Duration,
    /// Bytes the spool may hold at once (see `SpoolBudget`).
    pub spool_budget_bytes: u64,
    /// The spool's directory, and the free space kept on its filesystem (see `SpoolDisk`).
    pub spool_root: PathBuf,
    pub min_free_bytes: u64,
    /// The policy's largest upload.
    pub max_upload_bytes: u64,
    /// Running places, all demos together.
    pub max_sandboxes: u32,
    /// The share of those places one client may hold; 100 leaves it to the other limits.
    pub max_share_percent: u32,
}

/// The state intake's limits keep between requests.
pub struct Intake {
    uploads: Arc<Semaphore>,
    budget: SpoolBudget,
    disk: SpoolDisk,
    /// When a full disk was last noted among the deployment's events.
    disk_full_noted: Mutex<Option<Instant>>,
    idle: Duration,
    max_upload_bytes: u64,
    /// Live sandboxes one client may hold, if limited.
    share: Option<u64>,
    /// Creations in progress per client (not yet recorded, so not yet counted).
    in_progress: Mutex<HashMap<ClientKey, u64>>,
    max_uploads_per_client: u64,
}

impl Intake {
    pub fn new(settings: IntakeSettings) -> Intake {
        let share = (settings.max_share_percent < 100).then(|| {
            (u64::from(settings.max_sandboxes) * u64::from(settings.max_share_percent) / 100).max(1)
        });
        Intake {
            uploads: Arc::new(Semaphore::new(settings.max_uploads.max(1))),
            budget: SpoolBudget::new(settings.spool_budget_bytes),
            disk: SpoolDisk::new(settings.spool_root, settings.min_free_bytes),
            disk_full_noted: Mutex::new(None),
            idle: settings.idle,
            max_upload_bytes: settings.max_upload_bytes,
            share,
            in_progress: Mutex::new(HashMap::new()),
            max_uploads_per_client: settings.max_uploads_per_client.max(1),
        }
    }

    pub fn spool_budget(&self) -> &SpoolBudget {
        &self.budget
    }

    pub fn spool_disk(&self) -> &SpoolDisk {
        &self.disk
    }

    /// An upload refused for want of disk: counted each time, and noted among the
    /// deployment's events (which logs it) at most once a minute.
    async fn disk_full(&self, lifecycle: &Lifecycle, free_bytes: u64) {
        metrics::counter!("testdrive_uploads_refused_disk_full_total").increment(1);
        {
            let mut noted = self.disk_full_noted.lock().expect("intake lock");
            let now = Instant::now();
            if noted.is_some_and(|at| now.duration_since(at) < DISK_FULL_NOTED_EVERY) {
                return;
            }
            *noted = Some(now);
        }
        lifecycle.note(ServiceEvent::DiskFull { free_bytes }).await;
    }

    /// Holds one of `client`'s places while its sandbox is made; refused (`429`) when the
    /// client already has its most creations in progress, or when its live sandboxes and
    /// creations in progress already fill its share.
    async fn claim(&self, store: &dyn Store, client: ClientKey) -> Result<Claim<'_>, ApiError> {
        let claim = Claim::take(self, client);
        if claim.in_progress > self.max_uploads_per_client {
            return Err(ApiError::TooMany {
                detail: format!(
                    "this address is already uploading {} trials; try again when they are in",
                    claim.in_progress - 1
                ),
                retry_after: 10,
            });
        }
        let Some(share) = self.share else {
            return Ok(claim);
        };
        let live = store.count_live_for_client(&client.to_string()).await?;
        if live + claim.in_progress > share {
            return Err(ApiError::TooMany {
                detail: format!(
                    "this address has {live} live sandboxes and may hold at most {share} at \
                     once; try again when one has ended"
                ),
                retry_after: 60,
            });
        }
        Ok(claim)
    }
}

/// A creation in progress for one client, counted until dropped.
struct Claim<'a> {
    intake: &'a Intake,
    client: ClientKey,
    /// The client's creations in progress when this one began, itself included.
    in_progress: u64,
}

impl<'a> Claim<'a> {
    fn take(intake: &'a Intake, client: ClientKey) -> Claim<'a> {
        let mut all = intake.in_progress.lock().expect("intake lock");
        let count = all.entry(client).or_insert(0);
        *count += 1;
        Claim {
            intake,
            client,
            in_progress: *count,
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Ok(mut all) = self.intake.in_progress.lock()
            && let Some(count) = all.get_mut(&self.client)
        {
            *count -= 1;
            if *count == 0 {
                all.remove(&self.client);
            }
        }
    }
}

/// Everything the form carried, checked, with the files already in the spool.
struct Form {
    window: TrialWindow,
    introduction: Introduction,
    spool: Spool,
}

fn form_error(err: MultipartError) -> ApiError {
    if err.is_too_large() {
        ApiError::TooLarge(err.to_string())
    } else {
        ApiError::BadRequest(err.to_string())
    }
}

fn spool_error(err: MultipartError) -> SpoolError {
    if err.is_too_large() {
        SpoolError::RequestTooLarge(err.to_string())
    } else {
        SpoolError::Body(err.to_string())
    }
}

/// A short text field, read whole (it is bounded), as UTF-8.
async fn text_field<S, E>(
    form: &mut MultipartReader<S>,
    name: &str,
    limit: usize,
) -> Result<String, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut bytes = Vec::new();
    while let Some(chunk) = form.chunk().await.map_err(form_error)? {
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::invalid(
                name,
                format!("must be at most {limit} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| ApiError::invalid(name, "must be UTF-8 text"))
}

/// Reads the form in order, streaming each file to the spool under the demo's rules. The
/// trial begins (into `begun`) as soon as the form names its demo, so its sandbox is made
/// while the files arrive.
async fn read_form<S, E>(
    state: &AppState,
    begun: &mut Option<Begun>,
    mut form: MultipartReader<S>,
    disk: DiskClaim,
) -> Result<Form, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut disk = Some(disk);
    let mut chosen: Option<(Demo, Spool)> = None;
    let mut seconds = None;
    let mut prospect = Prospect::default();
    let mut answers: Vec<(String, String)> = Vec::new();
    let mut invitation: Option<InvitationId> = None;
    let mut opened: Option<Invitation> = None;
    loop {
        let part = match form.next_part().await {
            Ok(Some(part)) => part,
            Ok(None) => break,
            Err(MultipartError::BodyTooLarge { .. }) if chosen.is_none() => {
                return Err(ApiError::TooLarge(format!(
                    "the form must name its demo (the demo field, before the files) within \
                     its first {BEFORE_DEMO} bytes"
                )));
            }
            Err(e) => return Err(form_error(e)),
        };
        match part.name.as_str() {
            "demo" => {
                if chosen.is_some() {
                    return Err(ApiError::invalid("demo", "is given twice"));
                }
                let demo_id = DemoId::parse(&text_field(&mut form, "demo", 64).await?)?;
                let demo = state
                    .store
                    .demo(demo_id)
                    .await?
                    .filter(|d| d.enabled)
                    .ok_or(ApiError::NotFound("no such demo"))?;
                if let Some(why) = demo.image_status.not_available() {
                    return Err(ApiError::Conflict(why));
                }
                state.lifecycle.check_room(Some(&demo)).await?;
                let intake = &state.intake;
                let files = demo.spec.upload.max_bytes.min(intake.max_upload_bytes);
                // The files are all that is written: the request's other bytes and anything
                // over the demo's limit are no claim on the disk.
                let mut disk = disk.take();
                if let Some(disk) = disk.as_mut() {
                    disk.limit_to(files);
                }
                let room = intake.budget.reserve(demo.spec.upload.max_bytes)?;
                let trial = begun.insert(state.lifecycle.begin(&demo).await?);
                let spool = Spool::create_within(
                    room,
                    disk,
                    state.lifecycle.settings().dirs.root(),
                    trial.id(),
                    demo.spec.upload.clone(),
                )
                .await?;
                form.allow_body_bytes(files.saturating_add(FORM_SLACK));
                chosen = Some((demo, spool));
            }
            "seconds" => seconds = Some(text_field(&mut form, "seconds", 32).await?),
            "email" => {
                let text = text_field(&mut form, "email", 1024).await?;
                prospect.email = Prospect::parse_email(&text)?;
            }
            "company" => {
                let text = text_field(&mut form, "company", 1024).await?;
                prospect.company = Prospect::parse_company(&text)?;
            }
            "needs" => {
                let text = text_field(&mut form, "needs", 16384).await?;
                prospect.needs = Prospect::parse_needs(&text)?;
            }
            "invitation" => {
                if invitation.is_some() {
                    return Err(ApiError::invalid("invitation", "is given twice"));
                }
                let text = text_field(&mut form, "invitation", 64).await?;
                let id = InvitationId::parse(&text)?;
                invitation = Some(id);
                // Refused before the files are read when the demo is known already.
                if let Some((demo, _)) = &chosen {
                    opened = Some(open_invitation(state, id, demo).await?);
                }
            }
            name if name.starts_with(ANSWER_PREFIX) => {
                if answers.len() >= MAX_ANSWERS {
                    return Err(ApiError::invalid(name, "too many answers"));
                }
                let limit = MAX_ANSWER_CHARS * 4;
                let text = text_field(&mut form, name, limit).await?;
                answers.push((name[ANSWER_PREFIX.len()..].to_string(), text));
            }
            "file" => {
                let Some((_, spool)) = chosen.as_mut() else {
                    return Err(ApiError::invalid(
                        "demo",
                        "the demo field must come before the files",
                    ));
                };
                let name = UploadName::parse(part.file_name.as_deref().unwrap_or_default())?;
                spool.admit(&name)?;
                let text = name.extension().is_some_and(|e| sniff::expects_text(&e));
                let (head, ended) = if text {
                    read_head(&mut form, &name).await?
                } else {
                    (Vec::new(), false)
                };
                let head = (!head.is_empty()).then(|| Ok(Bytes::from(head)));
                let rest = stream::unfold((&mut form, ended), |(form, ended)| async move {
                    if ended {
                        return None;
                    }
                    match form.chunk().await {
                        Ok(Some(chunk)) => Some((Ok(chunk), (form, false))),
                        Ok(None) => None,
                        Err(e) => Some((Err(spool_error(e)), (form, true))),
                    }
                });
                let content = pin!(stream::iter(head).chain(rest));
                if !text {
                    spool.write(name, content).await?;
                } else if let Some(at) = spool.write_text(name.clone(), content).await? {
                    return Err(ApiError::UnsupportedType(sniff::not_utf8(
                        name.as_str(),
                        at,
                    )));
                }
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    "is not a field of this form (demo, seconds, email, company, needs, \
                     invitation, q.<question id>, file)",
                ));
            }
        }
    }
    let (demo, mut spool) = chosen.ok_or_else(|| ApiError::invalid("demo", "is required"))?;
    if spool.files().is_empty() {
        return Err(ApiError::invalid("file", "at least one file is required"));
    }
    spool.release_unused();
    let window = TrialWindow::parse(seconds.as_deref(), &demo.spec.trial)?;
    let answers = Answers::parse(
        answers.iter().map(|(id, a)| (id.as_str(), a.as_str())),
        &demo.spec.questions,
        ANSWER_PREFIX,
    )?;
    let invitation = match (opened, invitation) {
        (Some(opened), _) => Some(opened),
        (None, Some(id)) => Some(open_invitation(state, id, &demo).await?),
        (None, None) => None,
    };
    // The vendor knows whom it invited: a sheet left blank is the invitation's.
    if let Some(invited) = invitation.as_ref().map(Invitation::prospect) {
        prospect.company = prospect.company.or(invited.company);
        prospect.email = prospect.email.or(invited.email);
    }
    Ok(Form {
        window,
        introduction: Introduction {
            prospect,
            answers,
            invitation,
        },
        spool,
    })
}

/// The first bytes of a file that should be text (up to `sniff::HEAD_BYTES`, and whether
/// that is all of it), refused at once when they show it is something else: a workbook
/// renamed `.csv` is told apart in words before a byte of it is written.
async fn read_head<S, E>(
    form: &mut MultipartReader<S>,
    name: &UploadName,
) -> Result<(Vec<u8>, bool), ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut head = Vec::new();
    let mut ended = false;
    while head.len() < sniff::HEAD_BYTES {
        match form.chunk().await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk),
            Ok(None) => {
                ended = true;
                break;
            }
            Err(e) => return Err(spool_error(e).into()),
        }
    }
    // An empty file is the spool's to refuse, as it always was (`422`).
    if !head.is_empty()
        && let Some(wrong) = sniff::wrong_file(name.as_str(), &head, ended)
    {
        return Err(if wrong.content == Content::Empty {
            ApiError::invalid("file", wrong.words)
        } else {
            ApiError::UnsupportedType(wrong.words)
        });
    }
    Ok((head, ended))
}

/// Scheme, host and port of a URL or an `Origin` (the port spelled out when it is the
/// scheme's default).
fn origin_of(url: &str) -> Option<(&'static str, String, u16)> {
    let (scheme, host, port) = url_parts(url)?;
    let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
    Some((scheme, host, port))
}

/// Refuses a trial another site's page made the browser start (it would run on the
/// visitor's address, and spend its share): `Sec-Fetch-Site` other than `same-origin`, or
/// an `Origin` other than the public URL's. A client that sends neither (a script, curl)
/// is not a browser on another site.
fn refuse_other_sites(headers: &HeaderMap, public_url: &str) -> Result<(), ApiError> {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(ApiError::Forbidden);
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let theirs = origin.to_str().ok().and_then(origin_of);
        if theirs.is_none() || theirs != origin_of(public_url) {
            return Err(ApiError::Forbidden);
        }
    }
    Ok(())
}

/// A prospect's trial form (multipart) → a new sandbox and its token; with `wait`, once
/// it is ready or failed (or that many seconds passed).
pub async fn start_trial(
    state: &AppState,
    request: Request,
    wait: Option<u32>,
) -> Result<(Sandbox, IssuedToken), ApiError> {
    let started = trial(state, request, wait).await;
    if let Err(ApiError::NoRoom { free_bytes }) = &started {
        state.intake.disk_full(&state.lifecycle, *free_bytes).await;
    }
    started
}

async fn trial(
    state: &AppState,
    request: Request,
    wait: Option<u32>,
) -> Result<(Sandbox, IssuedToken), ApiError> {
    let (parts, body) = request.into_parts();
    refuse_other_sites(&parts.headers, &state.public_url)?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multipart::boundary(content_type).ok_or_else(|| {
        ApiError::UnsupportedType("the body must be multipart/form-data".to_string())
    })?;
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let client = ClientAddress::of(&parts.headers, peer, &state.trusted_proxies).map(|c| c.key());
    if let Some(client) = client
        && let Err(wait) = state.creations.take(client)
    {
        return Err(ApiError::TooMany {
            detail: "too many sandboxes asked for from this address; try again shortly".to_string(),
            retry_after: wait.as_secs().max(1) as u32,
        });
    }
    let boundary = boundary.map_err(form_error)?;
    // Refuse before reading a byte of the upload when the Engine is down or every place is
    // taken.
    if !state.lifecycle.engine().is_healthy() {
        return Err(ApiError::Unavailable {
            detail: "the Docker Engine is unavailable, so no sandbox can be made now; \
                     nothing was uploaded"
                .to_string(),
            retry_after: 5,
        });
    }
    state.lifecycle.check_room(None).await?;
    let intake = &state.intake;
    let ceiling = intake.max_upload_bytes.saturating_add(FORM_SLACK);
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > ceiling) {
        return Err(ApiError::TooLarge(format!(
            "the request is over the service's limit of {ceiling} bytes"
        )));
    }
    // The disk's floor, before a byte of the body is read: a request that says how long it
    // is claims that much (its files cannot be more); one that does not is only measured as
    // it streams, since assuming the demo's whole limit would refuse its small uploads
    // whenever the disk is not nearly empty.
    let disk = intake.disk.claim(declared.unwrap_or(0))?;
    let upload = intake
        .uploads
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Unavailable {
            detail: "as many uploads as the service takes at once are arriving; try again \
                     shortly"
                .to_string(),
            retry_after: 5,
        })?;
    let claim = match client {
        Some(client) => Some(intake.claim(state.store.as_ref(), client).await?),
        None => None,
    };

    let limits = Limits {
        header_bytes: PART_HEADER_BYTES,
        preamble_bytes: PART_HEADER_BYTES,
        parts: MAX_PARTS,
        body_bytes: BEFORE_DEMO.min(ceiling),
        idle: intake.idle,
    };
    let reader = MultipartReader::new(body.into_data_stream(), &boundary, limits);
    let mut begun = None;
    let form = match read_form(state, &mut begun, reader, disk).await {
        Ok(form) => form,
        Err(refused) => {
            // Nothing of it may remain by the time the client reads the refusal.
            if let Some(begun) = begun {
                begun.abandon().await;
            }
            return Err(refused);
        }
    };
    drop(upload);
    let begun = begun.ok_or_else(|| ApiError::invalid("demo", "is required"))?;
    let created = begun
        .finish(form.window, form.introduction, form.spool)
        .await?;
    let mut sandbox = created.sandbox;
    if let Some(claim) = claim {
        // The sandbox exists and its token is only in this answer: a failure here costs
        // the share's accuracy, not the prospect's trial.
        if let Err(e) = state
            .store
            .set_client_key(sandbox.id, &claim.client.to_string())
            .await
        {
            tracing::warn!(sandbox_id = %sandbox.id, error = %e, "cannot record the sandbox's client");
        }
    }
    if let Some(wait) = wait {
        let mut progress = created.progress;
        let wait = Duration::from_secs(u64::from(wait.min(state.max_wait_seconds)));
        Lifecycle::wait_settled(&mut progress, wait).await;
        sandbox = state
            .store
            .sandbox(sandbox.id)
            .await?
            .ok_or(ApiError::NotFound("no such sandbox"))?;
    }
    Ok((sandbox, created.token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::session::tests::headers;

    #[test]
    fn trials_from_other_sites_are_refused() {
        let ours = "http://127.0.0.1:8080";
        let refused = |pairs| refuse_other_sites(&headers(pairs), ours).is_err();
        // Scripts and curl send neither.
        assert!(!refused(&[]));
        assert!(!refused(&[("sec-fetch-site", "same-origin")]));
        assert!(!refused(&[("origin", "http://127.0.0.1:8080")]));
        assert!(!refused(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "HTTP://127.0.0.1:8080")
        ]));
        assert!(refused(&[("sec-fetch-site", "cross-site")]));
        // A sibling host (a sandbox's own origin, say) is another site's page too.
        assert!(refused(&[("sec-fetch-site", "same-site")]));
        assert!(refused(&[("sec-fetch-site", "something-new")]));
        for origin in [
            "https://evil.example",
            "null",
            "http://127.0.0.1:8081",
            "https://127.0.0.1:8080",
            "http://localhost:8080",
            "http://x.sandbox.localhost:8080",
            "",
        ] {
            let map = headers(&[("origin", origin)]);
            assert!(refuse_other_sites(&map, ours).is_err(), "{origin}");
        }
        // Default ports and a path in the public URL.
        let public = "https://Try.Example.com/testdrive";
        let ok = |origin: &'static str| {
            refuse_other_sites(&headers(&[("origin", origin)]), public).is_ok()
        };
        assert!(ok("https://try.example.com"));
        assert!(ok("https://try.example.com:443"));
        assert!(!ok("http://try.example.com"));
        assert!(!ok("https://try.example.com.evil.example"));
    }

    #[tokio::test]
    async fn a_client_uploads_at_most_its_few_trials_at_once() {
        let intake = Intake::new(IntakeSettings {
            max_uploads: 8,
            max_uploads_per_client: 2,
            idle: Duration::from_secs(5),
            spool_budget_bytes: 1 << 20,
            spool_root: std::env::temp_dir(),
            min_free_bytes: 0,
            max_upload_bytes: 1 << 20,
            max_sandboxes: 10,
            max_share_percent: 100,
        });
        let store = crate::store::SqlStore::connect(
            "sqlite::memory:",
            crate::domain::NodeName::parse("local").unwrap(),
        )
        .await
        .unwrap();
        let key = |ip: &str| {
            ClientAddress::of(
                &HeaderMap::new(),
                Some(ip.parse().unwrap()),
                &Default::default(),
            )
            .unwrap()
            .key()
        };
        let (one, other) = (key("192.0.2.1:1"), key("192.0.2.2:1"));
        let first = intake.claim(&store, one).await.unwrap();
        let second = intake.claim(&store, one).await.unwrap();
        assert!(matches!(
            intake.claim(&store, one).await,
            Err(ApiError::TooMany { .. })
        ));
        let theirs = intake.claim(&store, other).await.unwrap();
        drop(first);
        let again = intake.claim(&store, one).await.unwrap();
        drop((second, again, theirs));
        assert!(intake.in_progress.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_client_holds_at_most_its_share_of_places_while_creating() {
        let intake = Intake::new(IntakeSettings {
            max_uploads: 4,
            max_uploads_per_client: 10,
            idle: Duration::from_secs(5),
            spool_budget_bytes: 1 << 20,
            spool_root: std::env::temp_dir(),
            min_free_bytes: 0,
            max_upload_bytes: 1 << 20,
            max_sandboxes: 10,
            max_share_percent: 20,
        });
        assert_eq!(intake.share, Some(2));
        let store = crate::store::SqlStore::connect(
            "sqlite::memory:",
            crate::domain::NodeName::parse("local").unwrap(),
        )
        .await
        .unwrap();
        let one = ClientAddress::of(
            &HeaderMap::new(),
            Some("192.0.2.1:1".parse().unwrap()),
            &Default::default(),
        )
        .unwrap()
        .key();
        let other = ClientAddress::of(
            &HeaderMap::new(),
            Some("192.0.2.2:1".parse().unwrap()),
            &Default::default(),
        )
        .unwrap()
        .key();
        let first = intake.claim(&store, one).await.unwrap();
        let second = intake.claim(&store, one).await.unwrap();
        let third = intake.claim(&store, one).await;
        assert!(
            matches!(
                third,
                Err(ApiError::TooMany {
                    retry_after: 60,
                    ..
                })
            ),
            "a third at once is over the share"
        );
        assert!(intake.claim(&store, other).await.is_ok());
        drop(first);
        let again = intake.claim(&store, one).await.unwrap();
        drop((second, again));
        assert!(intake.in_progress.lock().unwrap().is_empty());
        // 100 % leaves it to the other limits; a small share is still one place.
        let settings = |percent, max| IntakeSettings {
            max_share_percent: percent,
            max_sandboxes: max,
            max_uploads: 1,
            max_uploads_per_client: 1,
            idle: Duration::from_secs(1),
            spool_budget_bytes: 1,
            spool_root: std::env::temp_dir(),
            min_free_bytes: 0,
            max_upload_bytes: 1,
        };
        assert_eq!(Intake::new(settings(100, 10)).share, None);
        assert_eq!(Intake::new(settings(20, 2)).share, Some(1));
        assert_eq!(Intake::new(settings(50, 50)).share, Some(25));
    }
}
