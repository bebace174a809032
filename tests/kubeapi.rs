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

/// A Kubernetes API server stand-in over TLS (rustls), which also takes
/// `POST /hook` (200): `GET /api/v1/nodes`
/// answers a `NodeList` of one Ready node, `tls-node-0`, to clients that
/// present `token` (if given) and a client certificate signed by
/// `client_ca` (if given); anything else gets 401 or a refused handshake.
/// A plain HTTP/1.1 exchange per connection, which is all the host's
/// client needs.
pub struct TlsKubeApi {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsKubeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsKubeApi {
    /// Serve with `server`'s certificate.
    pub async fn start(
        server: &super::pki::Issued,
        client_ca: Option<&std::path::Path>,
        token: Option<&str>,
    ) -> TlsKubeApi {
        let config = super::pki::server_config(server, client_ca);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let token = token.map(str::to_owned);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, token) = (acceptor.clone(), token.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = answer(tls, token.as_deref()).await;
                    }
                });
            }
        });
        TlsKubeApi { url, task }
    }
}

async fn answer(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    token: Option<&str>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let authorised =
        token.is_none_or(|t| head.contains(&format!("authorization: bearer {}", t.to_lowercase())));
    let (status, body) = if head.starts_with("post /hook") {
        // A webhook receiver too, for the http grant's CA bundle.
        ("200 OK", "{}".to_owned())
    } else if !head.starts_with("get /api/v1/nodes") {
        ("404 Not Found", "{}".to_owned())
    } else if authorised {
        let list = json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {},
                          "items": [node("tls-node-0", true, "control-plane")]});
        ("200 OK", list.to_string())
    } else {
        ("401 Unauthorized", "{}".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(response.as_bytes()).await?;
    tls.shutdown().await
}
