//! Any node answers for any sandbox. A sandbox lives on one node (its container on that
//! node's Engine, its files on that node's disk), so whatever acts on it is served there:
//! a request on another node is forwarded to the owner, as it came (method, path, query,
//! headers, body as a stream, WebSocket upgrades), with the node key and the client's
//! address. The owner serves it as if the client had come straight to it.
//!
//! What is forwarded, when several nodes share the database:
//! - everything on a sandbox host (`<id>.<sandbox domain>`), and every request whose path
//!   names a sandbox (`/s/{id}/…`, `/v1/sandboxes/{id}/…`, `/trials/{id}/…`, a console's
//!   action on one sandbox);
//! - a new trial (`POST /v1/sandboxes`, `POST /trials`): the form's first field names the
//!   demo, read here (at most `BEFORE_DEMO` bytes, kept and sent on); the trial goes to the
//!   node `Cluster::place` picks. What is read here is a hint for the route only: the node
//!   that takes the trial reads the whole form under every rule, as always.
//!
//! The owner unreachable: reads of the record (`GET`, outside the proxy) are answered here
//! from the database (at once when it counts as down, else when the forward cannot
//! connect); the demo itself and any change are still tried on the owner, and answer `503`
//! with `Retry-After` when it cannot be reached, saying that the trial's deadline is kept.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;

use super::client::ClientAddress;
use super::intake::BEFORE_DEMO;
use super::origins::Host;
use super::proxy::{is_upgrade, strip_hop_by_hop};
use super::{ApiError, AppState};
use crate::domain::{DemoId, Node, NodeName, SandboxId};

/// The node key (`Cluster::key`): the request comes from another node of the deployment.
const NODE_KEY: HeaderName = HeaderName::from_static("x-testdrive-node-key");
/// The client's address as the forwarding node counted it.
const NODE_CLIENT: HeaderName = HeaderName::from_static("x-testdrive-node-client");

/// How long a client is asked to wait while a sandbox's node is unreachable: about the time
/// a node takes to be counted down, or to come back.
const NODE_RETRY_AFTER: u32 = 15;

/// Outermost middleware: routes a request to the node that should serve it.
pub async fn to_owner(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let presented = req.headers_mut().remove(NODE_KEY);
    let client = req.headers_mut().remove(NODE_CLIENT);
    if let Some(key) = presented
        && state.cluster.is_node_key(key.as_bytes())
    {
        // Routed already, by a node that counted the client: the client is the peer here.
        if let Some(ip) = client
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<IpAddr>().ok())
        {
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(ip, 0)));
            req.headers_mut().remove("x-forwarded-for");
        }
        return next.run(req).await;
    }
    if !state.cluster.shared() {
        return next.run(req).await;
    }
    match route(&state, req).await {
        Ok(Routed::Here(req)) => next.run(req).await,
        Ok(Routed::There(response)) => response,
        Err(err) => err.into_response(),
    }
}

enum Routed {
    Here(Request),
    There(Response),
}

async fn route(state: &AppState, req: Request) -> Result<Routed, ApiError> {
    if let Some(id) = sandbox_of(state, &req) {
        return to_sandbox_node(state, id, req).await;
    }
    if req.method() == Method::POST && matches!(req.uri().path(), "/v1/sandboxes" | "/trials") {
        return to_placed_node(state, req).await;
    }
    Ok(Routed::Here(req))
}

/// The sandbox a request acts on: its host's, or the first path segment that is a sandbox
/// id (a demo's or an invitation's id is no sandbox's: `owner` finds none).
fn sandbox_of(state: &AppState, req: &Request) -> Option<SandboxId> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if let Host::Sandbox(id) = state.origins.host(host) {
        return Some(id);
    }
    req.uri()
        .path()
        .split('/')
        .filter(|segment| segment.len() == 36 || segment.len() == 32)
        .find_map(|segment| SandboxId::parse(segment).ok())
}

async fn to_sandbox_node(
    state: &AppState,
    id: SandboxId,
    req: Request,
) -> Result<Routed, ApiError> {
    let Some(owner) = state.cluster.owner(id).await? else {
        return Ok(Routed::Here(req)); // no such sandbox: the route says so
    };
    if &owner == state.cluster.me() {
        return Ok(Routed::Here(req));
    }
    let record_read = is_record_read(state, &req);
    match state.cluster.peer(&owner).await? {
        // A read of the record needs no node: the database has it.
        Some((_, false)) if record_read => Ok(Routed::Here(req)),
        // The owner serves it (what it holds in memory: a provisioning's progress, activity
        // not yet written); if it cannot be reached, the database answers.
        Some((node, true)) if record_read => {
            let again = copy_of_read(&req);
            match forward(state, &node, req).await {
                Err(ApiError::Unavailable { .. }) => Ok(Routed::Here(again)),
                answered => answered.map(Routed::There),
            }
        }
        // Anything else goes to the owner even while it counts as down: `down` stops new
        // trials and hands its deadlines over, but a node that is back (or was only cut off
        // from the database for a while) serves its sandboxes before its next heartbeat.
        Some((node, _)) => forward(state, &node, req).await.map(Routed::There),
        None => Err(node_unreachable(&owner)),
    }
}

/// A bodiless `GET` again, with what the routes read of it (its peer).
fn copy_of_read(req: &Request) -> Request {
    let mut copy = Request::new(Body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    if let Some(peer) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        copy.extensions_mut().insert(*peer);
    }
    copy
}

/// A `GET` of testdrive's own pages or API about the sandbox (not of the demo through it).
fn is_record_read(state: &AppState, req: &Request) -> bool {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    matches!(*req.method(), Method::GET | Method::HEAD)
        && matches!(state.origins.host(host), Host::Service)
        && !req.uri().path().starts_with("/s/")
}

fn node_unreachable(node: &NodeName) -> ApiError {
    ApiError::Unavailable {
        detail: format!(
            "the node running this sandbox ({node}) cannot be reached; the sandbox is kept \
             and its trial window still ends on time"
        ),
        retry_after: NODE_RETRY_AFTER,
    }
}

/// A new trial: the form's demo field says which demo, and `place` which node takes it.
async fn to_placed_node(state: &AppState, req: Request) -> Result<Routed, ApiError> {
    let (parts, body) = req.into_parts();
    let boundary = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| super::multipart::boundary(v)?.ok());
    let mut stream = body.into_data_stream();
    let mut seen = BytesMut::new();
    let mut demo = None;
    if let Some(boundary) = &boundary {
        while (seen.len() as u64) < BEFORE_DEMO {
            match stream.next().await {
                Some(Ok(chunk)) => seen.extend_from_slice(&chunk),
                Some(Err(err)) => {
                    return Err(ApiError::BadRequest(format!(
                        "the form could not be read: {err}"
                    )));
                }
                None => break,
            }
            if let Some(found) = demo_field(&seen, boundary) {
                demo = Some(found);
                break;
            }
        }
    }
    let seen = seen.freeze();
    let rest =
        futures_util::stream::once(async move { Ok::<Bytes, axum::Error>(seen) }).chain(stream);
    let req = Request::from_parts(parts, Body::from_stream(rest));
    let Some(demo) = demo else {
        return Ok(Routed::Here(req)); // the form is refused here, in words
    };
    let Some(node) = state.cluster.place(demo).await? else {
        return Ok(Routed::Here(req)); // no node has a place: said here, with Retry-After
    };
    tracing::debug!(demo_id = %demo, %node, "a new trial placed");
    if &node == state.cluster.me() {
        return Ok(Routed::Here(req));
    }
    // `place` saw the node up just now (a cached record may be a second older).
    match state.cluster.peer(&node).await? {
        Some((node, _)) => forward(state, &node, req).await.map(Routed::There),
        None => Ok(Routed::Here(req)),
    }
}

/// The value of the form's `demo` field, once `seen` holds it whole.
fn demo_field(seen: &[u8], boundary: &str) -> Option<DemoId> {
    let delimiter = format!("--{boundary}");
    let text = std::str::from_utf8(seen).unwrap_or_else(|e| {
        std::str::from_utf8(&seen[..e.valid_up_to()]).expect("valid up to here")
    });
    let mut parts = text.split(delimiter.as_str()).peekable();
    while let Some(part) = parts.next() {
        // The last piece may be cut short: a part is whole once a delimiter follows it.
        parts.peek()?;
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let named_demo = head.lines().any(|line| {
            line.to_ascii_lowercase()
                .starts_with("content-disposition:")
                && line.contains("name=\"demo\"")
        });
        if named_demo {
            let value = value.strip_suffix("\r\n")?;
            return DemoId::parse(value.trim()).ok();
        }
    }
    None
}

/// Sends the request to `node` as it came, and its answer back as it comes.
async fn forward(state: &AppState, node: &Node, mut req: Request) -> Result<Response, ApiError> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let client = ClientAddress::of(req.headers(), peer, &state.trusted_proxies);
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    *req.uri_mut() = format!("{}{path}", node.url)
        .parse()
        .map_err(|_| ApiError::BadRequest("the path cannot be forwarded".to_string()))?;
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let protocol = req.headers().get(header::UPGRADE).cloned();
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if let Some(protocol) = protocol.filter(|_| upgrade) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    add_node_headers(headers, state.cluster.key(), client.map(|c| c.ip()));
    metrics::counter!("testdrive_node_forwards_total", "node" => node.name.to_string())
        .increment(1);

    let mut response = match state.upstream.request(req).await {
        Ok(response) => response,
        Err(err) => {
            tracing::warn!(node = %node.name, %err, "cannot forward to a node");
            return Err(node_unreachable(&node.name));
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ApiError::BadGateway(
                "the node switched protocols unasked".to_string(),
            ));
        };
        let node_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let Ok((client, node)) = tokio::try_join!(client_upgrade, node_upgrade) {
                let (mut client, mut node) = (TokioIo::new(client), TokioIo::new(node));
                let _ = tokio::io::copy_bidirectional(&mut client, &mut node).await;
            }
        });
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    strip_hop_by_hop(response.headers_mut());
    Ok(response.map(Body::new))
}

fn add_node_headers(headers: &mut HeaderMap, key: &str, client: Option<IpAddr>) {
    if let Ok(key) = HeaderValue::from_str(key) {
        headers.insert(NODE_KEY, key);
    }
    if let Some(client) = client.and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok()) {
        headers.insert(NODE_CLIENT, client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_field_is_read_once_whole() {
        let id = DemoId::new();
        let form = format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"demo\"\r\n\r\n{id}\r\n--XyZ\r\n\
             Content-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\na,b\r\n"
        );
        assert_eq!(demo_field(form.as_bytes(), "XyZ"), Some(id));
        // Cut inside the value: not yet.
        let cut = form.find(&id.to_string()).unwrap() + 10;
        assert_eq!(demo_field(&form.as_bytes()[..cut], "XyZ"), None);
        // Another field named first, a file before the demo, no demo at all: none here.
        let other = "--XyZ\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\na@b.c\r\n--XyZ";
        assert_eq!(demo_field(other.as_bytes(), "XyZ"), None);
        assert_eq!(demo_field(b"\xff\xfe garbage", "XyZ"), None);
    }
}
