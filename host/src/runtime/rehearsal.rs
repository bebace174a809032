//! Rehearsal: a plugin run in the real sandbox (its manifest's fuel,
//! deadline and memory) with the capabilities that touch the outside
//! world (`docker`, `kube`, `smtp`, outgoing HTTP) answered by recording
//! stubs, for `eventpulse plugin run`. Nothing leaves the process: every
//! call is recorded with its arguments and answered from a fixed script.
//!
//! Grants still apply: a capability the manifest does not grant, an HTTP
//! destination outside its grant, or a container its docker grant would
//! not let it create (labels, image, privileges, network, mounts) is
//! refused as in production and recorded as refused, so a rehearsal shows
//! what a real run would be denied. The selector check on containers a
//! plugin names does not apply: the stub's containers match it.
//!
//! The stubs' answers:
//! - `docker`: `list-containers` finds one running, healthy container
//!   carrying the selector's labels (`stub-container-1`); creating a
//!   container or a replica returns `stub-created-N`; start, stop,
//!   restart and remove succeed; `wait-healthy` is true; `inspect` returns
//!   `{"Id": ID, "State": {"Status": "running"}}`.
//! - `kube`: no nodes, no pods, no node metrics, and `get` returns an
//!   object with only the kind, namespace and name asked for; `cordon`,
//!   `evict` and `delete-node` succeed when the grant lists their verb
//!   (`grants.kube.write`) and are refused otherwise.
//! - `smtp`: accepted, message id `stub-message-N`.
//! - HTTP: `200` with the body `{"ok":true}` (`application/json`).
//!
//! A replay ([`Rehearsal::refusing`]) answers no call: each granted one is
//! recorded and refused as `unavailable`, with the replay's reason.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::manifest::KubeWrite;
use serde_json::{Value, json};

use super::bindings::eventpulse::plugin::{docker, kube, smtp, types};
use super::host::HostState;

type CapResult<T> = Result<T, types::CapabilityError>;

/// One capability call a rehearsed plugin made.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Call {
    /// `docker`, `kube`, `smtp`, `http`.
    pub capability: String,
    /// The function (`create-replica`) or HTTP method.
    pub operation: String,
    /// Its arguments (secret values redacted).
    #[schema(value_type = Object)]
    pub args: Value,
    /// What the stub answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub answer: Option<Value>,
    /// Why the call was refused, as it would be in production.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Where a rehearsal's calls are recorded; shared by the runtime and the
/// caller that reads them afterwards.
#[derive(Debug, Clone, Default)]
pub struct Rehearsal {
    calls: Arc<Mutex<Vec<Call>>>,
    /// Set for a replay: every granted call is refused with this reason
    /// (as `unavailable`), instead of answered by a stub.
    refuse: Option<Arc<str>>,
}

impl Rehearsal {
    /// A rehearsal that refuses every capability call with `why` (replays:
    /// the world as it was is not recorded, and a stub's made-up answer
    /// would make a decision look different for no real reason).
    pub fn refusing(why: &str) -> Rehearsal {
        Rehearsal {
            calls: Arc::default(),
            refuse: Some(why.into()),
        }
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("rehearsal lock").clone()
    }

    /// The calls so far, leaving none.
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().expect("rehearsal lock"))
    }

    /// Why calls are refused, in a replay.
    pub(super) fn refusal(&self) -> Option<&str> {
        self.refuse.as_deref()
    }

    fn record(
        &self,
        capability: &str,
        operation: &str,
        args: Value,
        answer: Result<Value, String>,
    ) {
        let (answer, refused) = match answer {
            Ok(v) => (Some(v), None),
            Err(why) => (None, Some(why)),
        };
        self.calls.lock().expect("rehearsal lock").push(Call {
            capability: capability.to_owned(),
            operation: operation.to_owned(),
            args,
            answer,
            refused,
        });
    }

    /// How many calls of `capability` were recorded (for stub ids).
    fn count(&self, capability: &str) -> usize {
        let calls = self.calls.lock().expect("rehearsal lock");
        calls.iter().filter(|c| c.capability == capability).count()
    }

    /// Record an outgoing HTTP request that the grant refuses (or, in a
    /// replay, that every request is refused for `why`).
    pub(super) fn http_refused(&self, method: &str, uri: &str, why: &str) {
        let args = json!({ "uri": uri });
        self.record("http", method, args, Err(why.into()));
    }

    /// Record a granted outgoing HTTP request (`uri` and `body` already
    /// redacted); the stub's response.
    pub(super) fn http(&self, method: &str, uri: &str, body: &str) -> http::Response<String> {
        let body: Value = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.into()));
        let args = json!({ "uri": uri, "body": body });
        self.record("http", method, args, Ok(json!({ "status": 200 })));
        http::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(r#"{"ok":true}"#.to_owned())
            .expect("a valid stub response")
    }
}

/// The linker's view of a sandbox under rehearsal: the `docker`, `kube`
/// and `smtp` imports go to the stubs.
pub(super) struct Stubbed<'a>(pub &'a mut HostState);

/// Links `Stubbed` in place of the real capabilities.
pub(super) struct Stubs;

impl wasmtime::component::HasData for Stubs {
    type Data<'a> = Stubbed<'a>;
}

impl Stubbed<'_> {
    fn rehearsal(&self) -> &Rehearsal {
        self.0
            .env
            .rehearsal
            .as_ref()
            .expect("stubs are linked only for a rehearsal")
    }

    /// Answer `operation` with `answer` if `capability` is granted; else
    /// refuse it as production does. Both are recorded.
    fn answer<T: Serialize>(
        &mut self,
        capability: &str,
        granted: bool,
        operation: &str,
        args: Value,
        answer: T,
    ) -> CapResult<T> {
        // Arguments may carry secrets (a join token in a container's
        // environment): recorded redacted, as the audit log would be.
        let mut args = args;
        redact(&self.0.env, &mut args);
        if !granted {
            self.rehearsal()
                .record(capability, operation, args, Err("not granted".into()));
            return Err(self.0.deny(capability));
        }
        if let Some(why) = self.rehearsal().refusal().map(str::to_owned) {
            self.rehearsal()
                .record(capability, operation, args, Err(why.clone()));
            return Err(types::CapabilityError::Unavailable(why));
        }
        let shown = serde_json::to_value(&answer).unwrap_or(Value::Null);
        self.rehearsal()
            .record(capability, operation, args, Ok(shown));
        Ok(answer)
    }

    fn docker<T: Serialize>(&mut self, operation: &str, args: Value, answer: T) -> CapResult<T> {
        let granted = self.0.env.manifest.grants.docker.is_some();
        self.answer("docker", granted, operation, args, answer)
    }

    fn kube<T: Serialize>(&mut self, operation: &str, args: Value, answer: T) -> CapResult<T> {
        let granted = self.0.env.manifest.grants.kube.is_some();
        self.answer("kube", granted, operation, args, answer)
    }

    /// A kube write: granted only when the grant lists `verb`.
    fn kube_write(&mut self, verb: KubeWrite, args: Value) -> CapResult<()> {
        let granted = self
            .0
            .env
            .manifest
            .grants
            .kube
            .as_ref()
            .is_some_and(|g| g.write.contains(&verb));
        self.answer("kube", granted, verb.as_str(), args, ())
    }

    fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.rehearsal().count("docker") + 1)
    }
}

impl types::Host for Stubbed<'_> {}

impl docker::Host for Stubbed<'_> {
    async fn list_containers(
        &mut self,
        selector: Vec<(String, String)>,
    ) -> CapResult<Vec<docker::Container>> {
        let name = selector
            .iter()
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join("-");
        let found = vec![docker::Container {
            id: "stub-container-1".into(),
            name: format!("{}-1", if name.is_empty() { "stub" } else { &name }),
            image: "stub:latest".into(),
            state: "running".into(),
            health: Some("healthy".into()),
            labels: selector.clone(),
            created: 0,
        }];
        self.docker("list-containers", json!({ "selector": selector }), found)
    }

    async fn create_replica(&mut self, from: String, name: Option<String>) -> CapResult<String> {
        let id = self.next_id("stub-created");
        self.docker("create-replica", json!({ "from": from, "name": name }), id)
    }

    async fn create(&mut self, spec: docker::ContainerSpec) -> CapResult<String> {
        let id = self.next_id("stub-created");
        let args = serde_json::to_value(&spec).unwrap_or(Value::Null);
        // The grant's finer checks (labels, image, privileges, network,
        // mounts) as production applies them.
        if let Some(grant) = self.0.env.manifest.grants.docker.clone()
            && let Err(why) = super::docker::check_spec(&grant, &spec)
        {
            let mut args = args;
            redact(&self.0.env, &mut args);
            self.rehearsal()
                .record("docker", "create", args, Err(why.clone()));
            self.0.denied.get_or_insert_with(|| "docker".to_owned());
            return Err(types::CapabilityError::Denied(format!(
                "docker create: {why}"
            )));
        }
        self.docker("create", args, id)
    }

    async fn start(&mut self, id: String) -> CapResult<()> {
        self.docker("start", json!({ "id": id }), ())
    }

    async fn stop(&mut self, id: String, timeout_ms: u32) -> CapResult<()> {
        self.docker("stop", json!({ "id": id, "timeout_ms": timeout_ms }), ())
    }

    async fn restart(&mut self, id: String, timeout_ms: u32) -> CapResult<()> {
        self.docker("restart", json!({ "id": id, "timeout_ms": timeout_ms }), ())
    }

    async fn remove(&mut self, id: String) -> CapResult<()> {
        self.docker("remove", json!({ "id": id }), ())
    }

    async fn wait_healthy(&mut self, id: String, timeout_ms: u32) -> CapResult<bool> {
        self.docker(
            "wait-healthy",
            json!({ "id": id, "timeout_ms": timeout_ms }),
            true,
        )
    }

    async fn inspect(&mut self, id: String) -> CapResult<String> {
        let answer = json!({ "Id": id, "State": { "Status": "running" } }).to_string();
        self.docker("inspect", json!({ "id": id }), answer)
    }
}

impl kube::Host for Stubbed<'_> {
    async fn list_nodes(&mut self) -> CapResult<Vec<kube::Node>> {
        self.kube("list-nodes", json!({}), Vec::new())
    }

    async fn get(&mut self, kind: String, ns: Option<String>, name: String) -> CapResult<String> {
        let object = json!({ "kind": kind, "metadata": { "namespace": ns, "name": name } });
        self.kube(
            "get",
            json!({ "kind": kind, "namespace": ns, "name": name }),
            object.to_string(),
        )
    }

    async fn list_pods(&mut self, ns: Option<String>, field: Option<String>) -> CapResult<String> {
        self.kube(
            "list-pods",
            json!({ "namespace": ns, "field_selector": field }),
            json!({ "items": [] }).to_string(),
        )
    }

    async fn list_node_metrics(&mut self) -> CapResult<String> {
        self.kube(
            "list-node-metrics",
            json!({}),
            json!({ "items": [] }).to_string(),
        )
    }

    async fn cordon(&mut self, node: String, unschedulable: bool) -> CapResult<()> {
        self.kube_write(
            KubeWrite::Cordon,
            json!({ "node": node, "unschedulable": unschedulable }),
        )
    }

    async fn evict(&mut self, namespace: String, pod: String) -> CapResult<()> {
        self.kube_write(
            KubeWrite::Evict,
            json!({ "namespace": namespace, "pod": pod }),
        )
    }

    async fn delete_node(&mut self, node: String) -> CapResult<()> {
        self.kube_write(KubeWrite::Delete, json!({ "node": node }))
    }
}

impl smtp::Host for Stubbed<'_> {
    async fn send(&mut self, mail: smtp::Mail) -> CapResult<String> {
        let granted = self.0.env.manifest.grants.smtp.is_some();
        let id = format!("stub-message-{}", self.rehearsal().count("smtp") + 1);
        let args = serde_json::to_value(&mail).unwrap_or(Value::Null);
        self.answer("smtp", granted, "send", args, id)
    }
}

/// Redact the plugin's secret values in every string of `value`.
fn redact(env: &super::host::PluginEnv, value: &mut Value) {
    match value {
        Value::String(s) => *s = env.redact(s),
        Value::Array(items) => items.iter_mut().for_each(|v| redact(env, v)),
        Value::Object(fields) => fields.values_mut().for_each(|v| redact(env, v)),
        _ => {}
    }
}
