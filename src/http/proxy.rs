//! `/s/{id}/…`: the prospect's way into their sandbox. Any method, headers, body and query
//! are forwarded to the demo's port as `/…`, WebSocket upgrades included. The sandbox token
//! comes as a bearer token or once as `?token=`, which is traded for an `HttpOnly` cookie
//! scoped to this sandbox's path. The token never reaches the demo: the `Authorization`
//! header carrying it and the cookie are removed before forwarding. A sleeping sandbox is
//! woken by the request, which is answered once the demo is ready again.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::auth::{bearer, opens, sandbox_id, sandbox_opened_by};
use super::session::{self, SANDBOX_COOKIE};
use super::{ApiError, AppState};
use crate::domain::{Sandbox, SandboxId, SandboxStatus, Timestamp};
use crate::lifecycle::LifecycleError;

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

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/s/{id}", any(add_slash))
        .route("/s/{id}/", any(open_root))
        .route("/s/{id}/{*rest}", any(open_path))
}

async fn add_slash(Path(id): Path<String>, uri: Uri) -> Response {
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, format!("/s/{id}/{query}"))],
    )
        .into_response()
}

async fn open_root(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    open(state, &id, "", req).await
}

async fn open_path(
    State(state): State<AppState>,
    Path((id, rest)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    open(state, &id, &rest, req).await
}

/// Splits `?token=` off the query: (token, the rest of the query).
fn take_token(query: Option<&str>) -> (Option<String>, String) {
    let Some(query) = query else {
        return (None, String::new());
    };
    let mut token = None;
    let mut rest = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == "token" {
            token = Some(value.into_owned());
        } else {
            rest.append_pair(&key, &value);
        }
    }
    (token, rest.finish())
}

async fn open(state: AppState, id: &str, rest: &str, req: Request) -> Result<Response, ApiError> {
    let id = sandbox_id(id)?;
    // An unknown sandbox answers like a locked one, so that probing ids without a token
    // does not tell which exist.
    let (query_token, rest_query) = take_token(req.uri().query());
    if let Some(token) = query_token {
        sandbox_opened_by(&state, id, [token.as_str()])
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let query = if rest_query.is_empty() {
            String::new()
        } else {
            format!("?{rest_query}")
        };
        let cookie = session::set_cookie(
            &state,
            SANDBOX_COOKIE,
            &token,
            &format!("/s/{id}/"),
            "Lax",
            None,
        );
        return Ok((
            StatusCode::SEE_OTHER,
            [(header::LOCATION, format!("/s/{id}/{rest}{query}"))],
            [(header::SET_COOKIE, cookie)],
        )
            .into_response());
    }

    let headers = req.headers();
    let tokens = bearer(headers)
        .into_iter()
        .chain(session::cookies(headers, SANDBOX_COOKIE));
    let (sandbox, _) = sandbox_opened_by(&state, id, tokens)
        .await?
        .ok_or(ApiError::Unauthorized)?;

    let gone = || ApiError::Gone("this sandbox has ended and its data was deleted".to_string());
    match sandbox.status {
        SandboxStatus::Ready => forward(&state, &sandbox, rest, req).await,
        SandboxStatus::Provisioning => Err(ApiError::Unavailable {
            detail: "the sandbox is still being prepared".to_string(),
            retry_after: 1,
        }),
        // Answered once it is awake: the prospect just sees a slower first page.
        SandboxStatus::Sleeping => match state.lifecycle.wake(sandbox.id).await {
            Ok(awake) => forward(&state, &awake, rest, req).await,
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

fn is_upgrade(headers: &HeaderMap) -> bool {
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
fn strip_hop_by_hop(headers: &mut HeaderMap) {
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

/// Removes the sandbox token from what the demo will see.
fn strip_credentials(headers: &mut HeaderMap, sandbox: &Sandbox) {
    if bearer(headers).is_some_and(|t| opens(sandbox, t)) {
        headers.remove(header::AUTHORIZATION);
    }
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !pair.starts_with(&format!("{SANDBOX_COOKIE}=")))
        .map(str::to_string)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
}

/// Keeps the demo's redirects and cookies inside `/s/{id}/`, and keeps its pages from
/// joining testdrive's own pages' browsing context group (see `session`).
fn rewrite_response_headers(headers: &mut HeaderMap, id: SandboxId, upstream: &str) {
    headers.remove("cross-origin-opener-policy");
    headers.remove("cross-origin-opener-policy-report-only");
    let prefix = format!("/s/{id}");
    if let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
        let local = location
            .strip_prefix(&format!("http://{upstream}"))
            .unwrap_or(location);
        if local.starts_with('/')
            && !local.starts_with("//")
            && let Ok(value) = HeaderValue::from_str(&format!("{prefix}{local}"))
        {
            headers.insert(header::LOCATION, value);
        }
    }
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|cookie| {
            let attrs = cookie.split(';').map(str::trim).filter_map(|attr| {
                let lower = attr.to_ascii_lowercase();
                if lower.starts_with("domain=") {
                    None
                } else if lower.starts_with("path=/") {
                    Some(format!("Path={prefix}{}", &attr[5..]))
                } else {
                    Some(attr.to_string())
                }
            });
            HeaderValue::from_str(&attrs.collect::<Vec<_>>().join("; ")).ok()
        })
        .collect();
    if !cookies.is_empty() {
        headers.remove(header::SET_COOKIE);
        for cookie in cookies {
            headers.append(header::SET_COOKIE, cookie);
        }
    }
}

async fn forward(
    state: &AppState,
    sandbox: &Sandbox,
    rest: &str,
    mut req: Request,
) -> Result<Response, ApiError> {
    let upstream_addr = sandbox
        .container_addr
        .clone()
        .ok_or_else(|| ApiError::BadGateway("the sandbox has no address".to_string()))?;
    let path_and_query = match req.uri().query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    *req.uri_mut() = format!("http://{upstream_addr}{path_and_query}")
        .parse()
        .map_err(|_| ApiError::BadRequest("the path cannot be forwarded".to_string()))?;

    let client_addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let upgrade_protocol = req.headers().get(header::UPGRADE).cloned();

    let headers = req.headers_mut();
    let original_host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(headers);
    strip_credentials(headers, sandbox);
    if let Some(protocol) = upgrade_protocol.filter(|_| upgrade) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    if let Some(ip) = client_addr.and_then(|ip| HeaderValue::from_str(&ip).ok()) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), ip);
    }
    if let Some(host) = original_host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    let proto = if state.https() { "https" } else { "http" };
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(proto),
    );
    if let Ok(prefix) = HeaderValue::from_str(&format!("/s/{}", sandbox.id)) {
        headers.insert(HeaderName::from_static("x-forwarded-prefix"), prefix);
    }

    state
        .lifecycle
        .activity()
        .record(sandbox.id, Timestamp::now());
    metrics::counter!("testdrive_proxy_requests_total").increment(1);

    let mut response = state
        .upstream
        .request(req)
        .await
        .map_err(|e| ApiError::BadGateway(format!("the demo did not answer: {e}")))?;

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
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }

    strip_hop_by_hop(response.headers_mut());
    rewrite_response_headers(response.headers_mut(), sandbox.id, &upstream_addr);
    Ok(response.map(Body::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_split_off_the_query() {
        assert_eq!(take_token(None), (None, String::new()));
        assert_eq!(
            take_token(Some("a=1&token=tds_x&b=2")),
            (Some("tds_x".to_string()), "a=1&b=2".to_string())
        );
        assert_eq!(take_token(Some("a=1")), (None, "a=1".to_string()));
    }

    #[test]
    fn redirects_and_cookies_stay_under_the_prefix() {
        let id = SandboxId::new();
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, HeaderValue::from_static("/login"));
        headers.append(
            header::SET_COOKIE,
            HeaderValue::from_static("s=1; Path=/; Domain=example.com; HttpOnly"),
        );
        headers.append(header::SET_COOKIE, HeaderValue::from_static("t=2"));
        headers.insert(
            "cross-origin-opener-policy",
            HeaderValue::from_static("same-origin"),
        );
        rewrite_response_headers(&mut headers, id, "10.0.0.2:8080");
        assert!(!headers.contains_key("cross-origin-opener-policy"));
        assert_eq!(headers[header::LOCATION], format!("/s/{id}/login").as_str());
        let cookies: Vec<_> = headers.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies[0], format!("s=1; Path=/s/{id}/; HttpOnly").as_str());
        assert_eq!(cookies[1], "t=2");

        let mut absolute = HeaderMap::new();
        absolute.insert(
            header::LOCATION,
            HeaderValue::from_static("http://10.0.0.2:8080/x?y=1"),
        );
        rewrite_response_headers(&mut absolute, id, "10.0.0.2:8080");
        assert_eq!(
            absolute[header::LOCATION],
            format!("/s/{id}/x?y=1").as_str()
        );
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
