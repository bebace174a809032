//! A stand-in for a k3s API server, since none runs here: it serves the
//! Kubernetes node API (`GET /api/v1/nodes`, a `NodeList` in the real
//! shape) on 127.0.0.1 and checks the bearer token like the real one
//! (401 otherwise).
//!
//! Nodes: one control-plane node, plus one per container on the Docker
//! Engine labelled `k3s.pool=<pool>` (named by its `k3s.node` label or
//! container name). A real agent registers its Node with the server when it
//! joins; the stand-in's agents cannot reach a server on the host's
//! loopback, so a worker counts as joined, and `Ready`, when its container
//! is running and its health check passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

/// A running stand-in.
pub struct KubeApi {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Requests served (including refused ones).
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct St {
    token: String,
    pool: String,
    requests: Arc<AtomicUsize>,
}

impl KubeApi {
    /// Serve the nodes of `pool`, to clients presenting `token`.
    pub async fn start(pool: &str, token: &str) -> KubeApi {
        let requests = Arc::new(AtomicUsize::new(0));
        let st = St {
            token: token.to_owned(),
            pool: pool.to_owned(),
            requests: requests.clone(),
        };
        let app = Router::new()
            .route("/api/v1/nodes", get(nodes))
            .with_state(st);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        KubeApi {
            url,
            requests,
            task,
        }
    }
}

fn node(name: &str, ready: bool, role: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            format!("node-role.kubernetes.io/{role}"): "true",
        }},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "2", "memory": "4014504Ki", "pods": "110"},
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": if ready { "True" } else { "False" }},
            ],
        },
    })
}

async fn nodes(State(st): State<St>, headers: HeaderMap) -> Result<Json<Value>, StatusCode> {
    st.requests.fetch_add(1, Ordering::Relaxed);
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {}", st.token)) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let list = super::dockerkit::labelled(&format!("k3s.pool={}", st.pool), true)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let mut items = vec![node("k3s-server-0", true, "control-plane")];
    for c in list {
        let labels = c.labels.unwrap_or_default();
        let name = labels.get("k3s.node").cloned().unwrap_or_else(|| {
            c.names
                .and_then(|n| n.first().cloned())
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned()
        });
        // `Up 3 seconds (healthy)`: running with a passing health check.
        let ready = c.status.unwrap_or_default().contains("(healthy)");
        items.push(node(&name, ready, "worker"));
    }
    Ok(Json(
        json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": items}),
    ))
}
