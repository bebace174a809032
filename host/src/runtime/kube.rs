//! The `kube` capability: read-only calls to the Kubernetes API server the
//! plugin's [`KubeGrant`] names, with the bearer token from the plugin's
//! own secrets. Responses are capped in size and time; the server being
//! unreachable (or answering 5xx) is `unavailable`, other refusals `failed`.

use std::time::Duration;

use secrecy::ExposeSecret;
use tracing::Instrument as _;

use super::bindings::eventpulse::plugin::{kube, types};
use super::host::{HostState, PluginEnv};

type CapResult<T> = Result<T, types::CapabilityError>;

/// Largest API response a plugin gets.
const MAX_RESPONSE: usize = 4 << 20;
/// Deadline of one API call.
const TIMEOUT: Duration = Duration::from_secs(10);

fn failed(m: String) -> types::CapabilityError {
    types::CapabilityError::Failed(m)
}

/// A path segment from a plugin: DNS-1123 names only, so nothing can
/// escape the path it is put in.
fn segment(what: &str, v: &str) -> CapResult<String> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(v.to_owned())
    } else {
        Err(failed(format!("kube: {what} `{v}` is not a valid name")))
    }
}

/// The API path of one object.
fn object_path(kind: &str, ns: Option<&str>, name: &str) -> CapResult<String> {
    let name = segment("name", name)?;
    let ns = || -> CapResult<String> { segment("namespace", ns.unwrap_or("default")) };
    Ok(match kind {
        "Node" => format!("/api/v1/nodes/{name}"),
        "Pod" => format!("/api/v1/namespaces/{}/pods/{name}", ns()?),
        "Service" => format!("/api/v1/namespaces/{}/services/{name}", ns()?),
        "Deployment" => format!("/apis/apps/v1/namespaces/{}/deployments/{name}", ns()?),
        "ReplicaSet" => format!("/apis/apps/v1/namespaces/{}/replicasets/{name}", ns()?),
        "StatefulSet" => format!("/apis/apps/v1/namespaces/{}/statefulsets/{name}", ns()?),
        "DaemonSet" => format!("/apis/apps/v1/namespaces/{}/daemonsets/{name}", ns()?),
        other => return Err(failed(format!("kube: kind `{other}` is not supported"))),
    })
}

/// A `Node` object as the contract's record.
fn node(v: &serde_json::Value) -> kube::Node {
    let strings = |v: &serde_json::Value| -> Vec<(String, String)> {
        v.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect()
    };
    let labels = strings(&v["metadata"]["labels"]);
    kube::Node {
        name: v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        ready: v["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"),
        roles: labels
            .iter()
            .filter_map(|(k, _)| {
                k.strip_prefix("node-role.kubernetes.io/")
                    .map(str::to_owned)
            })
            .collect(),
        allocatable: strings(&v["status"]["allocatable"]),
        unschedulable: v["spec"]["unschedulable"].as_bool().unwrap_or(false),
        labels,
    }
}

impl HostState {
    /// GET `path` (with `query`) from the granted API server; a failure
    /// is counted as an enrichment failure.
    async fn kube_get_json(
        &mut self,
        path: &str,
        query: &[(&str, &str)],
    ) -> CapResult<serde_json::Value> {
        let Some(grant) = self.env.manifest.grants.kube.clone() else {
            self.env.refuse_call("kube", "get", path, "not granted");
            return Err(self.deny("kube"));
        };
        self.env.metrics.capability_call("kube", "allowed");
        let env = self.env.clone();
        let span = super::host::capability_span("kube", "get");
        let got = kube_fetch(&env, &grant, path, query).instrument(span).await;
        if got.is_err() {
            self.env.metrics.enrichment_failed(&self.env.name);
        }
        got
    }
}

/// GET `path` from the API server `grant` names.
async fn kube_fetch(
    env: &PluginEnv,
    grant: &super::manifest::KubeGrant,
    path: &str,
    query: &[(&str, &str)],
) -> CapResult<serde_json::Value> {
    let token = match &grant.token_secret {
        Some(name) => Some(
            env.secrets
                .get(name)
                .ok_or_else(|| failed(format!("kube: secret `{name}` is not in [secrets]")))?
                .expose_secret()
                .to_owned(),
        ),
        None => None,
    };
    let url = format!("{}{path}", grant.endpoint.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| failed(format!("kube: {e}")))?;
    let mut request = client.get(&url).query(query);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let unavailable = |e: reqwest::Error| {
        types::CapabilityError::Unavailable(format!("kube: {}", e.without_url()))
    };
    let mut response = request.send().await.map_err(unavailable)?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(failed(format!(
                "kube: response larger than {MAX_RESPONSE} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    if status.is_server_error() {
        return Err(types::CapabilityError::Unavailable(format!(
            "kube: GET {path}: {status}"
        )));
    }
    if !status.is_success() {
        return Err(failed(format!("kube: GET {path}: {status}")));
    }
    serde_json::from_slice(&body).map_err(|e| failed(format!("kube: GET {path}: not JSON: {e}")))
}

impl kube::Host for HostState {
    async fn list_nodes(&mut self) -> CapResult<Vec<kube::Node>> {
        let list = self.kube_get_json("/api/v1/nodes", &[]).await?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(node)
            .collect())
    }

    async fn get(&mut self, kind: String, ns: Option<String>, name: String) -> CapResult<String> {
        let path = object_path(&kind, ns.as_deref(), &name)?;
        Ok(self.kube_get_json(&path, &[]).await?.to_string())
    }

    async fn list_pods(
        &mut self,
        ns: Option<String>,
        selector: Option<String>,
    ) -> CapResult<String> {
        let path = match ns {
            Some(ns) => format!("/api/v1/namespaces/{}/pods", segment("namespace", &ns)?),
            None => "/api/v1/pods".to_owned(),
        };
        let query: Vec<(&str, &str)> = selector
            .iter()
            .map(|s| ("fieldSelector", s.as_str()))
            .collect();
        Ok(self.kube_get_json(&path, &query).await?.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_and_names_that_cannot_escape() {
        assert_eq!(
            object_path("Pod", Some("prod"), "web-1").unwrap(),
            "/api/v1/namespaces/prod/pods/web-1"
        );
        assert_eq!(
            object_path("Deployment", None, "web").unwrap(),
            "/apis/apps/v1/namespaces/default/deployments/web"
        );
        assert_eq!(
            object_path("Node", None, "k3s-worker-1").unwrap(),
            "/api/v1/nodes/k3s-worker-1"
        );
        assert!(object_path("Pod", Some("prod"), "../../secrets").is_err());
        assert!(object_path("Secret", None, "x").is_err());
    }

    #[test]
    fn node_readiness_roles_and_allocatable() {
        let n = node(&serde_json::json!({
            "metadata": {"name": "w1", "labels": {"node-role.kubernetes.io/worker": "true"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "allocatable": {"cpu": "2", "pods": "110"}
            }
        }));
        assert!(n.ready && n.unschedulable);
        assert_eq!(n.roles, vec!["worker".to_owned()]);
        assert!(n.allocatable.contains(&("cpu".into(), "2".into())));
    }
}
