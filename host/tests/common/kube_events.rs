//! A stand-in for the events API of a Kubernetes API server, since none
//! runs here. It speaks the documented protocol the host's watcher uses:
//! - `GET /api/v1/events?fieldSelector=type=Warning&limit=N[&continue=T]`:
//!   an `EventList` of the events as they are now (one per object, its
//!   newest version), paged, with the list's `metadata.resourceVersion`;
//! - `GET /api/v1/events?watch=1&resourceVersion=RV&timeoutSeconds=S`:
//!   newline-delimited watch events (`ADDED`/`MODIFIED` with the object)
//!   for every change after RV, then each new change as it happens, a
//!   `BOOKMARK` before the watch ends after S seconds; a RV older than the
//!   compaction point gets the `ERROR` event with a `Status` of code 410
//!   (`Expired`), as the real server sends it;
//! - a bearer token is required (401 otherwise).
//!
//! The test drives it with [`EventsApi::add`] and [`EventsApi::modify`],
//! and reads how it was called ([`EventsApi::lists`], [`EventsApi::watches`]).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

/// The kind of the marker change [`EventsApi::compact`] records (never
/// served: it cuts open watches).
const COMPACTED: &str = "COMPACTED";

/// One change in the cluster's event log.
#[derive(Clone)]
struct Change {
    version: u64,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Log {
    changes: Vec<Change>,
    /// Watches from a resourceVersion below this get 410.
    compacted_below: u64,
    lists: usize,
    /// The resourceVersion each watch started from.
    watches: Vec<u64>,
}

#[derive(Clone)]
struct St {
    token: String,
    log: Arc<Mutex<Log>>,
    changed: broadcast::Sender<Change>,
}

/// A running stand-in; the server stops when the runtime it was started on
/// stops.
#[derive(Clone)]
pub struct EventsApi {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    st: St,
}

impl EventsApi {
    /// Serve clients presenting `token`.
    pub async fn start(token: &str) -> EventsApi {
        let (changed, _) = broadcast::channel(4096);
        let st = St {
            token: token.to_owned(),
            log: Arc::default(),
            changed,
        };
        let app = axum::Router::new()
            .route("/api/v1/events", get(events))
            .with_state(st.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        EventsApi { url, st }
    }

    fn record(&self, kind: &'static str, mut object: Value) {
        let mut log = self.st.log.lock().unwrap();
        let version = log.changes.last().map_or(101, |c| c.version + 1);
        object["metadata"]["resourceVersion"] = version.to_string().into();
        let change = Change {
            version,
            kind,
            object,
        };
        log.changes.push(change.clone());
        let _ = self.st.changed.send(change);
    }

    /// A new event `name` (`type` Warning or Normal) about pod `pod`.
    pub fn add(&self, name: &str, pod: &str, reason: &str, ty: &str) {
        self.record("ADDED", event(name, pod, reason, ty, 1));
    }

    /// Event `name` seen again: its count goes up to `count`.
    pub fn modify(&self, name: &str, pod: &str, reason: &str, count: i64) {
        self.record("MODIFIED", event(name, pod, reason, "Warning", count));
    }

    /// Forget every change up to now, as etcd's compaction does: open
    /// watches are cut (no bookmark), and a watch from an older
    /// resourceVersion than now gets 410.
    pub fn compact(&self) {
        let mut log = self.st.log.lock().unwrap();
        let version = log.changes.last().map_or(101, |c| c.version + 1);
        let change = Change {
            version,
            kind: COMPACTED,
            object: json!({"metadata": {"uid": "", "resourceVersion": version.to_string()}}),
        };
        log.changes.push(change.clone());
        log.compacted_below = version;
        let _ = self.st.changed.send(change);
    }

    /// Lists served so far.
    pub fn lists(&self) -> usize {
        self.st.log.lock().unwrap().lists
    }

    /// The resourceVersion of every watch so far.
    pub fn watches(&self) -> Vec<u64> {
        self.st.log.lock().unwrap().watches.clone()
    }
}

/// A `core/v1` Event in the API server's shape.
fn event(name: &str, pod: &str, reason: &str, ty: &str, count: i64) -> Value {
    // Kubernetes moves lastTimestamp on each repeat.
    let last = format!("2026-01-25T01:{:02}:{:02}Z", count / 60, count % 60);
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}")},
        "involvedObject": {"kind": "Pod", "namespace": "shop", "name": pod},
        "reason": reason,
        "message": format!("{reason} on {pod}"),
        "type": ty,
        "count": count,
        "firstTimestamp": "2026-01-25T01:00:00Z",
        "lastTimestamp": last,
    })
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params {
    watch: Option<String>,
    resource_version: Option<String>,
    field_selector: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "continue")]
    next: Option<String>,
    timeout_seconds: Option<u64>,
}

fn wanted(selector: &Option<String>, object: &Value) -> bool {
    match selector.as_deref() {
        Some("type=Warning") => object["type"] == "Warning",
        _ => true,
    }
}

async fn events(State(st): State<St>, headers: HeaderMap, Query(p): Query<Params>) -> Response {
    let bearer = format!("Bearer {}", st.token);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"kind": "Status", "code": 401, "reason": "Unauthorized"})),
        )
            .into_response();
    }
    if p.watch.as_deref() == Some("1") || p.watch.as_deref() == Some("true") {
        return watch(st, p);
    }
    let mut log = st.log.lock().unwrap();
    log.lists += 1;
    // The newest version of each object, in order of first appearance.
    let mut objects: Vec<Value> = Vec::new();
    for c in log.changes.iter().filter(|c| c.kind != COMPACTED) {
        let uid = &c.object["metadata"]["uid"];
        match objects.iter_mut().find(|o| &o["metadata"]["uid"] == uid) {
            Some(o) => *o = c.object.clone(),
            None => objects.push(c.object.clone()),
        }
    }
    objects.retain(|o| wanted(&p.field_selector, o));
    let from: usize = p.next.as_deref().map_or(0, |t| t.parse().unwrap());
    let limit = p.limit.unwrap_or(usize::MAX);
    let page: Vec<Value> = objects.iter().skip(from).take(limit).cloned().collect();
    let next = (from + page.len() < objects.len()).then(|| (from + page.len()).to_string());
    let version = log.changes.last().map_or(100, |c| c.version);
    // (An empty log is at 100; the first change is 101.)
    axum::Json(json!({
        "kind": "EventList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": version.to_string(), "continue": next.unwrap_or_default()},
        "items": page,
    }))
    .into_response()
}

fn watch(st: St, p: Params) -> Response {
    let from: u64 = p
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let line = |v: Value| Bytes::from(format!("{v}\n"));
    let mut log = st.log.lock().unwrap();
    log.watches.push(from);
    if from < log.compacted_below {
        let _ = tx.try_send(line(json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410,
        }})));
        drop(tx);
        return axum::body::Body::new(Chan(rx)).into_response();
    }
    let mut changes = st.changed.subscribe();
    let backlog: Vec<Change> = log
        .changes
        .iter()
        .filter(|c| c.version > from && c.kind != COMPACTED)
        .cloned()
        .collect();
    let mut last = log.changes.last().map_or(from, |c| c.version).max(from);
    drop(log);
    let selector = p.field_selector.clone();
    let timeout = std::time::Duration::from_secs(p.timeout_seconds.unwrap_or(300));
    tokio::spawn(async move {
        for c in backlog {
            if wanted(&selector, &c.object)
                && tx
                    .send(line(json!({"type": c.kind, "object": c.object})))
                    .await
                    .is_err()
            {
                return;
            }
        }
        let end = tokio::time::Instant::now() + timeout;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(end) => break,
                c = changes.recv() => match c {
                    // Cut, as the real server's connection drops.
                    Ok(c) if c.kind == COMPACTED => return,
                    Ok(c) if c.version > last => {
                        last = c.version;
                        if wanted(&selector, &c.object)
                            && tx.send(line(json!({"type": c.kind, "object": c.object}))).await.is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
            }
        }
        let _ = tx
            .send(line(json!({"type": "BOOKMARK", "object": {
                "kind": "Event", "apiVersion": "v1",
                "metadata": {"resourceVersion": last.to_string()},
            }})))
            .await;
    });
    axum::body::Body::new(Chan(rx)).into_response()
}

/// A response body fed line by line.
struct Chan(mpsc::Receiver<Bytes>);

impl http_body::Body for Chan {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }
}
