//! A stand-in for a Kubernetes API server with a cluster in memory, since
//! none runs here: the endpoints seed 002's autoscaler uses, in the real
//! shapes, with the bearer token checked (401 otherwise):
//! - `GET /api/v1/nodes`: a `NodeList` (Ready condition, roles as
//!   `node-role.kubernetes.io/*` labels, allocatable, `spec.unschedulable`);
//! - `GET /api/v1/pods?fieldSelector=a.b=c[,..]`: a `PodList`, filtered;
//! - `GET /apis/metrics.k8s.io/v1beta1/nodes`: a `NodeMetricsList`;
//! - `PATCH /api/v1/nodes/{name}` (strategic merge patch of
//!   `spec.unschedulable`), `POST /api/v1/namespaces/{ns}/pods/{pod}/eviction`
//!   (the pod goes away), `DELETE /api/v1/nodes/{name}`: 404 for an object
//!   that is not there, each recorded in [`Cluster::writes`].
//!
//! The test shapes the cluster with [`Cluster::set_workers`] and
//! [`Cluster::set_pods`]. With [`Cluster::with_docker_pool`], the running
//! containers on the Docker Engine labelled `k3s.pool=<pool>` are workers
//! too (named by their `k3s.node` label, Ready once healthy, using one core
//! and 2 GiB), as the agents `action-k3s-node-add` starts would register
//! with a real server (which they cannot reach here).

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::{Value, json};

#[derive(Default)]
struct World {
    /// (name, ready, cpu cores used, memory GiB used) of each worker.
    workers: Vec<(String, bool, f64, f64)>,
    pods: Vec<Value>,
    writes: Vec<String>,
}

#[derive(Clone)]
struct St {
    token: String,
    world: Arc<Mutex<World>>,
    /// Containers of this `k3s.pool` are workers too.
    docker_pool: Option<String>,
}

/// A running stand-in; stops when dropped.
pub struct Cluster {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    st: St,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Cluster {
    /// Serve a cluster of one control-plane node, to clients presenting
    /// `token`.
    pub async fn start(token: &str) -> Cluster {
        Cluster::serve(token, None).await
    }

    /// [`Cluster::start`], with the Docker Engine's containers of `pool`
    /// as workers too.
    pub async fn with_docker_pool(token: &str, pool: &str) -> Cluster {
        Cluster::serve(token, Some(pool.to_owned())).await
    }

    async fn serve(token: &str, docker_pool: Option<String>) -> Cluster {
        let st = St {
            token: token.to_owned(),
            world: Arc::default(),
            docker_pool,
        };
        let app = Router::new()
            .route("/api/v1/nodes", get(nodes))
            .route("/api/v1/nodes/{name}", patch(cordon).delete(delete_node))
            .route("/api/v1/pods", get(pods))
            .route("/api/v1/namespaces/{ns}/pods/{pod}/eviction", post(evict))
            .route("/apis/metrics.k8s.io/v1beta1/nodes", get(metrics))
            .with_state(st.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Cluster { url, st, task }
    }

    /// The workers: (name, Ready, CPU cores used of 2, memory GiB used of 4).
    pub fn set_workers(&self, workers: &[(&str, bool, f64, f64)]) {
        self.st.world.lock().unwrap().workers = workers
            .iter()
            .map(|(n, r, c, m)| ((*n).to_owned(), *r, *c, *m))
            .collect();
    }

    /// The pods (`Pod` objects).
    pub fn set_pods(&self, pods: Vec<Value>) {
        self.st.world.lock().unwrap().pods = pods;
    }

    /// The worker names now.
    pub fn workers(&self) -> Vec<String> {
        let world = self.st.world.lock().unwrap();
        world.workers.iter().map(|w| w.0.clone()).collect()
    }

    /// Writes made: `cordon NODE`, `evict NS/POD`, `delete NODE`.
    pub fn writes(&self) -> Vec<String> {
        self.st.world.lock().unwrap().writes.clone()
    }
}

fn authorized(st: &St, headers: &HeaderMap) -> Result<(), Response> {
    let want = format!("Bearer {}", st.token);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(want.as_str()) {
        Ok(())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"kind": "Status", "code": 401})),
        )
            .into_response())
    }
}

fn node(name: &str, ready: bool, unschedulable: bool, control_plane: bool) -> Value {
    let mut labels = json!({"kubernetes.io/hostname": name});
    if control_plane {
        labels["node-role.kubernetes.io/control-plane"] = "true".into();
    }
    json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": unschedulable},
        "status": {
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        },
    })
}

/// The Docker-backed workers: (name, Ready, CPU cores, memory GiB).
async fn docker_workers(st: &St) -> Vec<(String, bool, f64, f64)> {
    let Some(pool) = &st.docker_pool else {
        return Vec::new();
    };
    let list = super::dockerkit::labelled(&format!("k3s.pool={pool}"), false)
        .await
        .unwrap_or_default();
    list.into_iter()
        .map(|c| {
            let name = c
                .labels
                .unwrap_or_default()
                .get("k3s.node")
                .cloned()
                .unwrap_or_default();
            let ready = c.status.unwrap_or_default().contains("(healthy)");
            (name, ready, 1.0, 2.0)
        })
        .collect()
}

/// Every worker: the in-memory ones, then the Docker-backed ones.
async fn all_workers(st: &St) -> Vec<(String, bool, f64, f64)> {
    let docker = docker_workers(st).await;
    let mut all = st.world.lock().unwrap().workers.clone();
    all.extend(docker);
    all
}

async fn nodes(State(st): State<St>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&st, &headers) {
        return r;
    }
    let workers = all_workers(&st).await;
    let world = st.world.lock().unwrap();
    let cordoned = |n: &str| world.writes.iter().any(|w| w == &format!("cordon {n}"));
    let mut items = vec![node("k3s-server", true, false, true)];
    items.extend(
        workers
            .iter()
            .map(|(n, ready, _, _)| node(n, *ready, cordoned(n), false)),
    );
    Json(json!({"kind": "NodeList", "items": items})).into_response()
}

async fn pods(
    State(st): State<St>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(r) = authorized(&st, &headers) {
        return r;
    }
    let world = st.world.lock().unwrap();
    let wanted = |pod: &Value| {
        q.get("fieldSelector")
            .map_or("", String::as_str)
            .split(',')
            .filter(|f| !f.is_empty())
            .all(|f| {
                let (path, value) = f.split_once('=').unwrap_or((f, ""));
                path.split('.').fold(pod, |v, k| &v[k]).as_str() == Some(value)
            })
    };
    let items: Vec<&Value> = world.pods.iter().filter(|p| wanted(p)).collect();
    Json(json!({"kind": "PodList", "items": items})).into_response()
}

async fn metrics(State(st): State<St>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&st, &headers) {
        return r;
    }
    let workers = all_workers(&st).await;
    let items: Vec<Value> = workers
        .iter()
        .filter(|w| w.1)
        .map(|(n, _, cpu, mem)| {
            json!({
                "metadata": {"name": n},
                "usage": {"cpu": format!("{}n", (cpu * 1e9) as u64), "memory": format!("{}Ki", (mem * 1024.0 * 1024.0) as u64)},
            })
        })
        .collect();
    Json(json!({"kind": "NodeMetricsList", "items": items})).into_response()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"kind": "Status", "code": 404})),
    )
        .into_response()
}

async fn cordon(
    State(st): State<St>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: String,
) -> Response {
    if let Err(r) = authorized(&st, &headers) {
        return r;
    }
    let kind = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let patch: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if kind != "application/strategic-merge-patch+json" || patch["spec"]["unschedulable"] != true {
        return (
            StatusCode::BAD_REQUEST,
            "expected a strategic merge patch of spec.unschedulable",
        )
            .into_response();
    }
    let mut world = st.world.lock().unwrap();
    if !world.workers.iter().any(|w| w.0 == name) {
        return not_found();
    }
    world.writes.push(format!("cordon {name}"));
    Json(node(&name, true, true, false)).into_response()
}

async fn delete_node(
    State(st): State<St>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = authorized(&st, &headers) {
        return r;
    }
    let mut world = st.world.lock().unwrap();
    let before = world.workers.len();
    world.workers.retain(|w| w.0 != name);
    if world.workers.len() == before {
        return not_found();
    }
    world.writes.push(format!("delete {name}"));
    Json(json!({"kind": "Status", "status": "Success"})).into_response()
}

async fn evict(
    State(st): State<St>,
    headers: HeaderMap,
    Path((ns, pod)): Path<(String, String)>,
    body: String,
) -> Response {
    if let Err(r) = authorized(&st, &headers) {
        return r;
    }
    let eviction: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if eviction["kind"] != "Eviction" || eviction["metadata"]["name"] != pod.as_str() {
        return (StatusCode::BAD_REQUEST, "expected an Eviction of this pod").into_response();
    }
    let mut world = st.world.lock().unwrap();
    let before = world.pods.len();
    world.pods.retain(|p| {
        !(p["metadata"]["namespace"] == ns.as_str() && p["metadata"]["name"] == pod.as_str())
    });
    if world.pods.len() == before {
        return not_found();
    }
    world.writes.push(format!("evict {ns}/{pod}"));
    (
        StatusCode::CREATED,
        Json(json!({"kind": "Status", "status": "Success"})),
    )
        .into_response()
}
