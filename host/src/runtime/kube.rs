//! The `kube` capability: calls to the Kubernetes API server the plugin's
//! [`KubeGrant`] names: reads, and the writes the grant lists
//! (`cordon`, `evict`, `delete`: each denied and audited unless granted,
//! and audited when made), over https verified against the grant's
//! CA bundle (or the system roots), authenticated by a bearer token from
//! the plugin's own secrets and/or a client certificate, or as the pod's
//! service account (`in_cluster`). Responses are capped in size and time;
//! the server being unreachable (or answering 5xx) is `unavailable`, a
//! certificate it cannot prove and other refusals `failed`.

use std::time::Duration;

use secrecy::ExposeSecret;
use tracing::Instrument as _;

use super::bindings::eventpulse::plugin::{kube, types};
use super::host::{HostState, PluginEnv};
use super::manifest::{KubeGrant, KubeWrite};

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

/// Where the service account is mounted in a pod.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The API server to call: its base URL, the bearer token, and the CA
/// bundle to trust (none: the system roots).
#[derive(Debug)]
struct Target {
    endpoint: String,
    token: Option<String>,
    ca_file: Option<std::path::PathBuf>,
}

/// The pod's own API server (`dir`: where the service account is
/// mounted): its URL, the service account's token (read now: it rotates)
/// and its CA bundle.
pub(crate) fn in_cluster(
    dir: Option<&std::path::Path>,
) -> Result<(String, String, std::path::PathBuf), String> {
    let dir = dir.map_or_else(|| SERVICE_ACCOUNT.into(), std::path::Path::to_path_buf);
    let host = std::env::var("KUBERNETES_SERVICE_HOST")
        .map_err(|_| "kube: in_cluster, but KUBERNETES_SERVICE_HOST is not set".to_owned())?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let token_file = dir.join("token");
    let token = std::fs::read_to_string(&token_file)
        .map_err(|e| format!("kube: service account token {}: {e}", token_file.display()))?;
    Ok((
        format!("https://{host}:{port}"),
        token.trim().to_owned(),
        dir.join("ca.crt"),
    ))
}

/// Where `grant` points, with its token.
fn target(env: &PluginEnv, grant: &KubeGrant) -> CapResult<Target> {
    if grant.in_cluster {
        let (endpoint, token, ca) =
            in_cluster(grant.service_account_dir.as_deref()).map_err(failed)?;
        return Ok(Target {
            endpoint,
            token: Some(token),
            ca_file: Some(grant.ca_file.clone().unwrap_or(ca)),
        });
    }
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
    Ok(Target {
        endpoint: grant.endpoint.trim_end_matches('/').to_owned(),
        token,
        ca_file: grant.ca_file.clone(),
    })
}

/// The HTTP client for `grant`: rustls, trusting only `ca_file` when it
/// is set, presenting the client certificate when there is one.
fn client(grant: &KubeGrant, ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    api_client(
        reqwest::Client::builder().timeout(TIMEOUT),
        ca_file,
        grant.client_cert_file.as_deref(),
        grant.client_key_file.as_deref(),
    )
}

/// A client for a Kubernetes API server (the `kube` capability's, and the
/// host's own event watcher's): rustls, trusting only `ca_file` when it is
/// set, presenting the client certificate `cert` + `key` when given.
pub(crate) fn api_client(
    builder: reqwest::ClientBuilder,
    ca_file: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> Result<reqwest::Client, String> {
    let mut b = builder.use_rustls_tls();
    if let Some(path) = ca_file {
        b = super::tls::trust_only(b, path).map_err(|e| format!("kube: {e}"))?;
    }
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let mut pem = std::fs::read(cert)
                .map_err(|e| format!("kube: client certificate {}: {e}", cert.display()))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(key)
                    .map_err(|e| format!("kube: client key {}: {e}", key.display()))?,
            );
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("kube: client certificate {}: {e}", cert.display()))?;
            b = b.identity(identity);
        }
        (None, None) => {}
        _ => return Err("kube: client_cert_file and client_key_file go together".into()),
    }
    b.build().map_err(|e| format!("kube: {e}"))
}

/// Why a request failed, certificate problems named as such.
fn send_error(e: reqwest::Error) -> types::CapabilityError {
    let mut chain = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(&e);
    while let Some(s) = source {
        chain.push_str(&s.to_string());
        chain.push_str(": ");
        source = s.source();
    }
    let text = e.without_url().to_string();
    if chain.contains("certificate")
        || chain.contains("UnknownIssuer")
        || chain.contains("NotValidForName")
    {
        // A server that cannot prove who it is will not later: not retryable.
        return failed(format!(
            "kube: the API server's TLS certificate was refused: {}",
            chain.trim_end_matches(": ")
        ));
    }
    types::CapabilityError::Unavailable(format!("kube: {text}"))
}

/// GET `path` from the API server `grant` names.
async fn kube_fetch(
    env: &PluginEnv,
    grant: &KubeGrant,
    path: &str,
    query: &[(&str, &str)],
) -> CapResult<serde_json::Value> {
    let (status, body) = kube_send(env, grant, reqwest::Method::GET, path, query, None).await?;
    if !status.is_success() {
        return Err(failed(format!("kube: GET {path}: {status}")));
    }
    serde_json::from_slice(&body).map_err(|e| failed(format!("kube: GET {path}: not JSON: {e}")))
}

/// Send `method` to `path` (with a JSON `body`: a strategic merge patch for
/// PATCH) to the API server `grant` names; the status and body. 5xx is
/// `unavailable`.
async fn kube_send(
    env: &PluginEnv,
    grant: &KubeGrant,
    method: reqwest::Method,
    path: &str,
    query: &[(&str, &str)],
    body: Option<serde_json::Value>,
) -> CapResult<(reqwest::StatusCode, Vec<u8>)> {
    let target = target(env, grant)?;
    let client = env
        .kube_client
        .get_or_init(|| client(grant, target.ca_file.as_deref()))
        .clone()
        .map_err(failed)?;
    let url = format!("{}{path}", target.endpoint);
    let patch = method == reqwest::Method::PATCH;
    let mut request = client.request(method.clone(), &url).query(query);
    if let Some(t) = target.token {
        request = request.bearer_auth(t);
    }
    if let Some(body) = body {
        let kind = if patch {
            "application/strategic-merge-patch+json"
        } else {
            "application/json"
        };
        request = request
            .header(reqwest::header::CONTENT_TYPE, kind)
            .body(body.to_string());
    }
    let unavailable = |e: reqwest::Error| {
        types::CapabilityError::Unavailable(format!("kube: {}", e.without_url()))
    };
    let mut response = request.send().await.map_err(send_error)?;
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
            "kube: {method} {path}: {status}"
        )));
    }
    Ok((status, body))
}

impl HostState {
    /// Make write `verb` (`method` on `path` with `body`) if the grant
    /// lists it; audited either way. A 404 is success when `gone_is_done`
    /// (the object is already what the write wants); 429 (a disruption
    /// budget, or throttling) is `unavailable`.
    async fn kube_write(
        &mut self,
        verb: KubeWrite,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        gone_is_done: bool,
    ) -> CapResult<()> {
        let Some(grant) = self.env.manifest.grants.kube.clone() else {
            self.env
                .refuse_call("kube", verb.as_str(), path, "not granted");
            return Err(self.deny("kube"));
        };
        if !grant.write.contains(&verb) {
            let why = format!(
                "write `{}` is not in the plugin's grants.kube.write",
                verb.as_str()
            );
            self.env.refuse_call("kube", verb.as_str(), path, &why);
            tracing::warn!(plugin.name = %self.env.name, verb = verb.as_str(), path, "denied: kube write not granted");
            return Err(types::CapabilityError::NotGranted(format!(
                "kube: {why} (plugin `{}`)",
                self.env.name
            )));
        }
        let env = self.env.clone();
        let span = super::host::capability_span("kube", verb.as_str());
        let sent = kube_send(&env, &grant, method.clone(), path, &[], body)
            .instrument(span)
            .await;
        let result = match sent {
            Ok((status, _)) if status.is_success() => Ok(()),
            Ok((reqwest::StatusCode::NOT_FOUND, _)) if gone_is_done => Ok(()),
            Ok((reqwest::StatusCode::TOO_MANY_REQUESTS, _)) => {
                Err(types::CapabilityError::Unavailable(format!(
                    "kube: {method} {path}: 429 (a disruption budget or throttling; try later)"
                )))
            }
            Ok((status, body)) => Err(failed(format!(
                "kube: {method} {path}: {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ))),
            Err(e) => Err(e),
        };
        let text = result.as_ref().err().map(|e| format!("{e:?}"));
        self.env.audit_call(
            "kube",
            verb.as_str(),
            path,
            text.as_deref().map_or(Ok(()), Err),
        );
        result
    }
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

    async fn list_node_metrics(&mut self) -> CapResult<String> {
        Ok(self
            .kube_get_json("/apis/metrics.k8s.io/v1beta1/nodes", &[])
            .await?
            .to_string())
    }

    async fn cordon(&mut self, node: String, unschedulable: bool) -> CapResult<()> {
        let path = format!("/api/v1/nodes/{}", segment("node", &node)?);
        let patch = serde_json::json!({"spec": {"unschedulable": unschedulable}});
        self.kube_write(
            KubeWrite::Cordon,
            reqwest::Method::PATCH,
            &path,
            Some(patch),
            false,
        )
        .await
    }

    async fn evict(&mut self, namespace: String, pod: String) -> CapResult<()> {
        let (ns, pod) = (segment("namespace", &namespace)?, segment("pod", &pod)?);
        let path = format!("/api/v1/namespaces/{ns}/pods/{pod}/eviction");
        let eviction = serde_json::json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod, "namespace": ns},
        });
        self.kube_write(
            KubeWrite::Evict,
            reqwest::Method::POST,
            &path,
            Some(eviction),
            true,
        )
        .await
    }

    async fn delete_node(&mut self, node: String) -> CapResult<()> {
        let path = format!("/api/v1/nodes/{}", segment("node", &node)?);
        self.kube_write(
            KubeWrite::Delete,
            reqwest::Method::DELETE,
            &path,
            None,
            true,
        )
        .await
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
