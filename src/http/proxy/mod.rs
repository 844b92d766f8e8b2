//! The way into a sandbox. With sandbox origins (the default), a request whose `Host` is
//! `<id>.<sandbox domain>` belongs wholly to that sandbox; on testdrive's origin,
//! `/s/{id}/…` serves scripts that send the bearer token and sends browsers on to the
//! sandbox's origin. With `sandbox_domain = "off"`, `/s/{id}/…` serves browsers too.
//! Either way any method, headers, body and query go to the demo's port (the path exactly
//! as received), WebSocket upgrades included. The sandbox token comes as a bearer token or
//! once as `?token=`, which is traded for an `HttpOnly` cookie for that host (or path). What
//! crosses in either direction is filtered by `headers`: nothing of testdrive's reaches a
//! demo, and nothing a demo answers acts beyond its sandbox. A sleeping sandbox is woken
//! by the request, which is answered once the demo is ready again.

mod cookie;
pub mod headers;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use self::headers::{Forwarded, Scope, confine_response, prepare_request};
use super::auth::{bearer, sandbox_id, sandbox_opened_by};
use super::client::ClientAddress;
use super::origins::Host;
use super::session::{self, SANDBOX_COOKIE};
use super::{ApiError, AppState};
use crate::domain::token::Claim;
use crate::domain::{Sandbox, SandboxId, SandboxStatus, Timestamp};
use crate::lifecycle::LifecycleError;

pub use self::cookie::SetCookie;

/// The HTTP client that talks to sandboxes, with pooled connections.
pub type Upstream = Client<HttpConnector, Body>;

pub fn upstream() -> Upstream {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector)
}

/// `/s/{id}/…` on testdrive's own origin.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/s/{id}", any(add_slash))
        .route("/s/{id}/", any(open_path))
        .route("/s/{id}/{*rest}", any(open_path))
}

/// Sends every request for a sandbox host to its sandbox, before testdrive's own routes
/// see it: nothing of testdrive's is served on a sandbox's origin.
pub async fn sandbox_hosts(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let target = req.uri().authority().map(|a| a.as_str());
    let host_header = req.headers().get(header::HOST).map(|h| h.to_str().ok());
    let host = match (target, host_header) {
        (_, Some(None)) => {
            return ApiError::BadRequest("the Host header is not text".to_string()).into_response();
        }
        (Some(target), Some(Some(host))) => {
            // A request line naming one host and a `Host` naming another would be routed by
            // one and cached or forwarded by the other.
            if state.origins.host(Some(target)) != state.origins.host(Some(host)) {
                return ApiError::BadRequest(
                    "the request's target and its Host header name different hosts".to_string(),
                )
                .into_response();
            }
            Some(host)
        }
        (target, Some(Some(host))) => target.or(Some(host)),
        (target, None) => target,
    };
    match state.origins.host(host) {
        Host::Service => next.run(req).await,
        Host::Sandbox(id) => {
            let path = req.uri().path().to_string();
            open(state, id, Door::OwnOrigin, &path, req)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
        Host::UnknownSandbox => ApiError::NotFound("no such sandbox").into_response(),
    }
}

async fn add_slash(Path(id): Path<String>, uri: Uri) -> Response {
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, format!("/s/{id}/{query}"))],
    )
        .into_response()
}

async fn open_path(
    State(state): State<AppState>,
    Path(params): Path<Vec<(String, String)>>,
    req: Request,
) -> Result<Response, ApiError> {
    let raw_id = params
        .iter()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    let id = sandbox_id(raw_id)?;
    // The demo's path exactly as the client sent it (percent-encoding kept): what follows
    // the raw `/s/<id>` segment.
    let raw = req.uri().path();
    let after_s = raw.strip_prefix("/s/").unwrap_or_default();
    let demo_path = after_s.find('/').map_or("/", |i| &after_s[i..]).to_string();
    open(state, id, Door::SharedOrigin, &demo_path, req).await
}

/// Which door a request came in by: it decides where cookies and redirects may point.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Door {
    /// `/s/{id}/…` on testdrive's origin.
    SharedOrigin,
    /// The sandbox's own host.
    OwnOrigin,
}

/// Splits `token=` off a raw query: (the token, the other pairs as they were sent).
fn take_token(query: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(query) = query else {
        return (None, None);
    };
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        let decoded: String = form_urlencoded::parse(key.as_bytes())
            .next()
            .map(|(k, _)| k.into_owned())
            .unwrap_or_default();
        if decoded == "token" {
            token = form_urlencoded::parse(pair.as_bytes())
                .next()
                .map(|(_, v)| v.into_owned());
        } else if !pair.is_empty() {
            rest.push(pair);
        }
    }
    let rest = (!rest.is_empty()).then(|| rest.join("&"));
    (token, rest)
}

fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    }
}

async fn open(
    state: AppState,
    id: SandboxId,
    door: Door,
    demo_path: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let (query_token, rest_query) = take_token(req.uri().query());
    let own_origins = state.origins.own_origins();
    // The sandbox's origin, without the trailing slash.
    let origin = state.origins.url(id);
    let origin = origin.trim_end_matches('/');

    // An unknown sandbox answers like a locked one, so that probing ids without a token
    // does not tell which exist.
    if let Some(token) = query_token {
        sandbox_opened_by(&state, id, [token.as_str()])
            .await?
            .ok_or(ApiError::Unauthorized)?;
        return Ok(match door {
            // The token becomes a cookie of this host; the demo never sees it.
            Door::OwnOrigin => {
                let cookie = session::set_cookie(&state, SANDBOX_COOKIE, &token, "/", "Lax", None);
                // Absolute, so that a path like `//elsewhere` stays a path of this host.
                let to = with_query(&format!("{origin}{demo_path}"), rest_query.as_deref());
                redirect(&to, Some(cookie))
            }
            Door::SharedOrigin if own_origins => send_on(origin, demo_path, rest_query, &token),
            Door::SharedOrigin => {
                let cookie = session::set_cookie(
                    &state,
                    SANDBOX_COOKIE,
                    &token,
                    &format!("/s/{id}/"),
                    "Lax",
                    None,
                );
                let to = with_query(&format!("/s/{id}{demo_path}"), rest_query.as_deref());
                redirect(&to, Some(cookie))
            }
        });
    }

    let headers = req.headers();
    let bearer_token = bearer(headers);
    let cookie_tokens = session::cookies(headers, SANDBOX_COOKIE);
    let (sandbox, token) =
        sandbox_opened_by(&state, id, bearer_token.into_iter().chain(cookie_tokens))
            .await?
            .ok_or(ApiError::Unauthorized)?;
    // A browser (its cookie, not a script's bearer token) on testdrive's origin goes to the
    // sandbox's own: there the demo cannot touch testdrive's pages.
    if door == Door::SharedOrigin && own_origins && bearer_token != Some(token) {
        let token = token.to_string();
        return Ok(send_on(origin, demo_path, rest_query, &token));
    }

    let gone = || ApiError::Gone("this sandbox has ended and its data was deleted".to_string());
    match sandbox.status {
        SandboxStatus::Ready => forward(&state, &sandbox, door, demo_path, req).await,
        SandboxStatus::Provisioning => Err(ApiError::Unavailable {
            detail: "the sandbox is still being prepared".to_string(),
            retry_after: 1,
        }),
        // Answered once it is awake: the prospect just sees a slower first page.
        SandboxStatus::Sleeping => match state.lifecycle.wake(sandbox.id).await {
            Ok(awake) => forward(&state, &awake, door, demo_path, req).await,
            Err(LifecycleError::Ended) => Err(gone()),
            Err(LifecycleError::Capacity(why)) => Err(ApiError::Unavailable {
                detail: format!("the sandbox is asleep and cannot wake now: {why}"),
                retry_after: 10,
            }),
            Err(other) => Err(other.into()),
        },
        SandboxStatus::Ended | SandboxStatus::Failed => Err(gone()),
    }
}

fn redirect(to: &str, cookie: Option<HeaderValue>) -> Response {
    let mut response =
        (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// To the sandbox's origin, carrying the token once for that host to trade for its cookie.
fn send_on(origin: &str, demo_path: &str, rest_query: Option<String>, token: &str) -> Response {
    let token_pair: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("token", token)
        .finish();
    let query = match rest_query {
        Some(rest) => format!("{rest}&{token_pair}"),
        None => token_pair,
    };
    redirect(&format!("{origin}{demo_path}?{query}"), None)
}

pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Headers that describe one hop, not the message: never forwarded as they are.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// Why the demo of a ready sandbox did not answer, as the client should hear it. An Engine
/// that does not answer (its daemon restarting) took the containers with it, and one that
/// just came back left them stopped, which the reconciler turns into sleep: either way the
/// sandbox is kept and answers again soon, so the client is told to retry.
async fn not_answering(
    state: &AppState,
    id: SandboxId,
    err: hyper_util::client::legacy::Error,
) -> ApiError {
    if !state.lifecycle.engine().is_healthy() {
        return ApiError::Unavailable {
            detail: "the Docker Engine does not answer: the sandbox is kept and comes back \
                     with it"
                .to_string(),
            retry_after: 10,
        };
    }
    match state.store.sandbox(id).await {
        Ok(Some(now)) if now.status == SandboxStatus::Sleeping => ApiError::Unavailable {
            detail: "the sandbox's container had stopped: it starts again on the next request"
                .to_string(),
            retry_after: 1,
        },
        _ => ApiError::BadGateway(format!("the demo did not answer: {err}")),
    }
}

async fn forward(
    state: &AppState,
    sandbox: &Sandbox,
    door: Door,
    demo_path: &str,
    mut req: Request,
) -> Result<Response, ApiError> {
    let upstream_addr = sandbox
        .container_addr
        .clone()
        .ok_or_else(|| ApiError::BadGateway("the sandbox has no address".to_string()))?;
    *req.uri_mut() = format!(
        "http://{upstream_addr}{}",
        with_query(demo_path, req.uri().query())
    )
    .parse()
    .map_err(|_| ApiError::BadRequest("the path cannot be forwarded".to_string()))?;

    // The client as the rate limit counts it: behind a trusted proxy, its forwarded
    // address, which testdrive then tells the demo (the client's own claim never reaches it).
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let client = ClientAddress::of(req.headers(), peer, &state.trusted_proxies).map(|c| c.ip());
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let upgrade_protocol = req.headers().get(header::UPGRADE).cloned();

    let prefix = match door {
        Door::SharedOrigin => format!("/s/{}", sandbox.id),
        Door::OwnOrigin => String::new(),
    };
    let headers = req.headers_mut();
    let original_host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(headers);
    prepare_request(
        headers,
        |t| !matches!(Claim::of(t), Claim::Other) || state.admin.0.matches(t),
        &Forwarded {
            client,
            host: original_host.as_ref(),
            proto: if state.https() { "https" } else { "http" },
            prefix: &prefix,
        },
    );
    if let Some(protocol) = upgrade_protocol.filter(|_| upgrade) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }

    state
        .lifecycle
        .activity()
        .record(sandbox.id, Timestamp::now());
    metrics::counter!("testdrive_proxy_requests_total").increment(1);

    let mut response = match state.upstream.request(req).await {
        Ok(response) => response,
        Err(err) => return Err(not_answering(state, sandbox.id, err).await),
    };

    let client_host = original_host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let scope = Scope {
        prefix: &prefix,
        authorities: &[upstream_addr.as_str(), client_host.as_str()],
        demo_path,
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ApiError::BadGateway(
                "the demo switched protocols unasked".to_string(),
            ));
        };
        let demo_upgrade = hyper::upgrade::on(&mut response);
        let id = sandbox.id;
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, demo_upgrade) {
                Ok((client, demo)) => {
                    let mut client = TokioIo::new(client);
                    let mut demo = TokioIo::new(demo);
                    if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut demo).await {
                        tracing::debug!(sandbox_id = %id, %err, "upgraded connection closed");
                    }
                }
                Err(err) => tracing::debug!(sandbox_id = %id, %err, "upgrade failed"),
            }
        });
        let (mut parts, _) = response.into_parts();
        confine_response(&mut parts.headers, &scope, true);
        return Ok(Response::from_parts(parts, Body::empty()));
    }

    strip_hop_by_hop(response.headers_mut());
    confine_response(response.headers_mut(), &scope, false);
    Ok(response.map(Body::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_split_off_the_query_as_sent() {
        assert_eq!(take_token(None), (None, None));
        assert_eq!(
            take_token(Some("a=%41&token=tds_x&b=c+d")),
            (Some("tds_x".to_string()), Some("a=%41&b=c+d".to_string()))
        );
        assert_eq!(
            take_token(Some("t%6Fken=tds_y")),
            (Some("tds_y".to_string()), None)
        );
        assert_eq!(take_token(Some("a=1")), (None, Some("a=1".to_string())));
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::ACCEPT));
    }
}
