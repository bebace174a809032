//! [`Context`]: the capabilities the host lends a plugin for one invocation.
//!
//! On wasm the calls go to the host's imports; in native tests they go to a
//! [`crate::testing::FakeHost`]. Nothing here reaches the outside world on
//! its own: a capability the manifest does not grant answers
//! [`CapabilityError::NotGranted`].

use crate::model::{Error, Labels, Severity, Timestamp};

/// Log levels for [`Context::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// How a capability call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapabilityError {
    /// The manifest does not grant this capability.
    NotGranted(String),
    /// The call was outside the grant.
    Denied(String),
    /// The backing service is unreachable; retrying may help.
    Unavailable(String),
    /// The backing service refused or failed the request.
    Failed(String),
}

impl std::fmt::Display for CapabilityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapabilityError::NotGranted(m) => write!(f, "not granted: {m}"),
            CapabilityError::Denied(m) => write!(f, "denied: {m}"),
            CapabilityError::Unavailable(m) => write!(f, "unavailable: {m}"),
            CapabilityError::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl std::error::Error for CapabilityError {}

impl From<CapabilityError> for Error {
    /// Unavailable and failed backends are worth retrying; a denial is not.
    fn from(e: CapabilityError) -> Self {
        match e {
            CapabilityError::Unavailable(_) | CapabilityError::Failed(_) => {
                Error::Retryable(e.to_string())
            }
            CapabilityError::NotGranted(_) | CapabilityError::Denied(_) => {
                Error::Permanent(e.to_string())
            }
        }
    }
}

/// A container as the `docker` capability reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// `running`, `exited`, ...
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or none.
    pub health: Option<String>,
    /// Labels.
    pub labels: Labels,
    /// Creation time (seconds since the epoch).
    pub created: u64,
}

/// A new container for [`Context::docker_create`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Container name; the engine picks one if `None`.
    pub name: Option<String>,
    /// Image reference; must be in the grant's allowlist.
    pub image: String,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// Labels; must include the grant's selector.
    pub labels: Labels,
    /// Command (the image's default if empty).
    pub cmd: Vec<String>,
    /// Network to attach to.
    pub network: Option<String>,
    /// Privileged mode; needs a grant.
    pub privileged: bool,
    /// `host-path:container-path[:ro]`; each host path needs a grant.
    pub mounts: Vec<String>,
}

/// A Kubernetes node as the `kube` capability reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Node name.
    pub name: String,
    /// Whether the `Ready` condition is `True`.
    pub ready: bool,
    /// Roles from `node-role.kubernetes.io/*` labels.
    pub roles: Vec<String>,
    /// Labels.
    pub labels: Labels,
    /// Allocatable resources (`cpu`, `memory`, `pods`).
    pub allocatable: Labels,
    /// Cordoned.
    pub unschedulable: bool,
}

/// An outgoing HTTP request for [`Context::http`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// `http://host[:port]/path?query` or `https://...`.
    pub url: String,
    /// Request headers (`content-length` is set for you).
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A `POST` of `body` with content type `application/json`.
    pub fn post_json(url: impl Into<String>, body: &serde_json::Value) -> Self {
        HttpRequest {
            method: "POST".into(),
            url: url.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

/// The response to an [`HttpRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Retry-After` in seconds (the HTTP-date form is not used by the
    /// chat APIs and is ignored).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        let secs: u64 = self.header("retry-after")?.trim().parse().ok()?;
        Some(std::time::Duration::from_secs(secs))
    }

    /// `Ok` for 2xx; otherwise the error a notifier reports: 429 and 5xx
    /// retryable (after `Retry-After` when given), 408 retryable, any other
    /// 4xx permanent. The message has the status and the start of the body.
    pub fn check(&self) -> Result<(), Error> {
        let snippet = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]);
        let message = format!("HTTP {}: {}", self.status, snippet.trim());
        match self.status {
            200..=299 => Ok(()),
            429 | 500..=599 => Err(match self.retry_after() {
                Some(after) => Error::retry_after(message, after),
                None => Error::retryable(message),
            }),
            408 => Err(Error::retryable(message)),
            _ => Err(Error::permanent(message)),
        }
    }
}

/// The host side of a plugin: what [`Context`] calls into.
///
/// Implemented by the SDK over the real imports, and by
/// [`crate::testing::FakeHost`]. Capabilities a test does not fake answer
/// "not granted", as an ungranted capability does in the host.
pub trait Host {
    /// Write a log line.
    fn log(&self, level: LogLevel, message: &str);
    /// The current time.
    fn now(&self) -> Timestamp;
    /// Read a state key.
    fn state_get(&self, key: &str) -> Option<String>;
    /// Write a state key, optionally expiring after `ttl_ms`.
    fn state_set(&self, key: &str, value: &str, ttl_ms: Option<u64>);
    /// Delete a state key.
    fn state_delete(&self, key: &str);
    /// Set timer `key` to fire after `delay_ms` with `data` (rules only;
    /// the default keeps nothing).
    fn timer_set(&self, _key: &str, _delay_ms: u64, _data: &str) {}
    /// Cancel timer `key` (rules only; the default does nothing).
    fn timer_cancel(&self, _key: &str) {}
    /// A config value from the manifest.
    fn config(&self, key: &str) -> Option<String>;
    /// A secret from the manifest.
    fn secret(&self, name: &str) -> Option<String>;
    /// Containers matching `selector`.
    fn docker_list_containers(
        &self,
        _selector: &Labels,
    ) -> Result<Vec<Container>, CapabilityError> {
        Err(CapabilityError::NotGranted("docker".into()))
    }
    /// Copy container `from` (image, env, labels, network) as a new one.
    fn docker_create_replica(
        &self,
        _from: &str,
        _name: Option<&str>,
    ) -> Result<String, CapabilityError> {
        Err(CapabilityError::NotGranted("docker".into()))
    }
    /// Create a container.
    fn docker_create(&self, _spec: &ContainerSpec) -> Result<String, CapabilityError> {
        Err(CapabilityError::NotGranted("docker".into()))
    }
    /// Start, stop, restart or remove a container (`op` is the name).
    fn docker_op(&self, _op: DockerOp, _id: &str) -> Result<(), CapabilityError> {
        Err(CapabilityError::NotGranted("docker".into()))
    }
    /// Wait until a container is healthy; `false` on the deadline.
    fn docker_wait_healthy(&self, _id: &str, _timeout_ms: u32) -> Result<bool, CapabilityError> {
        Err(CapabilityError::NotGranted("docker".into()))
    }
    /// The engine's inspect document of a container.
    fn docker_inspect(&self, _id: &str) -> Result<serde_json::Value, CapabilityError> {
        Err(CapabilityError::NotGranted("docker".into()))
    }
    /// Kubernetes nodes.
    fn kube_list_nodes(&self) -> Result<Vec<Node>, CapabilityError> {
        Err(CapabilityError::NotGranted("kube".into()))
    }
    /// One Kubernetes object.
    fn kube_get(
        &self,
        _kind: &str,
        _namespace: Option<&str>,
        _name: &str,
    ) -> Result<serde_json::Value, CapabilityError> {
        Err(CapabilityError::NotGranted("kube".into()))
    }
    /// Pods, optionally filtered by a field selector.
    fn kube_list_pods(
        &self,
        _namespace: Option<&str>,
        _field_selector: Option<&str>,
    ) -> Result<serde_json::Value, CapabilityError> {
        Err(CapabilityError::NotGranted("kube".into()))
    }
    /// Node usage from the metrics API (a `NodeMetricsList`).
    fn kube_list_node_metrics(&self) -> Result<serde_json::Value, CapabilityError> {
        Err(CapabilityError::NotGranted("kube".into()))
    }
    /// Mark a node unschedulable (or schedulable again).
    fn kube_cordon(&self, _node: &str, _unschedulable: bool) -> Result<(), CapabilityError> {
        Err(CapabilityError::NotGranted("kube".into()))
    }
    /// Evict a pod (the Eviction API).
    fn kube_evict(&self, _namespace: &str, _pod: &str) -> Result<(), CapabilityError> {
        Err(CapabilityError::NotGranted("kube".into()))
    }
    /// Delete a node object.
    fn kube_delete_node(&self, _node: &str) -> Result<(), CapabilityError> {
        Err(CapabilityError::NotGranted("kube".into()))
    }
    /// Send an HTTP request (wasi:http; only to granted hosts).
    fn http(&self, _request: &HttpRequest) -> Result<HttpResponse, CapabilityError> {
        Err(CapabilityError::NotGranted("http".into()))
    }
    /// Send mail through the granted SMTP server; returns the message id.
    fn smtp_send(&self, _mail: &Mail) -> Result<String, CapabilityError> {
        Err(CapabilityError::NotGranted("smtp".into()))
    }
}

/// A mail for [`Context::send_mail`]; sender, server and credentials are
/// the host's (the manifest's `smtp` grant).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mail {
    /// Recipients.
    pub to: Vec<String>,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text_body: String,
    /// HTML alternative, if any.
    pub html_body: Option<String>,
}

/// Container lifecycle operations for [`Host::docker_op`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerOp {
    /// Start a created or stopped container.
    Start,
    /// Stop, waiting up to the timeout (ms) before killing.
    Stop(u32),
    /// Restart, waiting up to the timeout (ms) before killing.
    Restart(u32),
    /// Remove (forcibly, running or not).
    Remove,
}

/// The capabilities lent to one invocation.
pub struct Context<'a> {
    host: Backend<'a>,
}

/// Where a [`Context`]'s calls go.
#[derive(Clone, Copy)]
enum Backend<'a> {
    /// The host's imports, called directly rather than through a `dyn Host`
    /// vtable: a vtable keeps every import alive, so a component built that
    /// way imports every capability (HTTP, Docker, Kubernetes, SMTP), and
    /// the host wires all of them into every fresh instance. Called
    /// directly, the linker keeps only what the plugin's code calls.
    #[cfg_attr(feature = "bench-every-import", allow(dead_code))]
    Imports,
    /// Any other [`Host`], e.g. [`crate::testing::FakeHost`].
    Dyn(&'a dyn Host),
}

/// `self.host.$method(args)` on whichever backend this context has.
macro_rules! host {
    ($cx:ident . $method:ident ( $($arg:expr),* )) => {
        match $cx.host {
            Backend::Imports => Host::$method(&crate::__guest::WitHost, $($arg),*),
            Backend::Dyn(h) => h.$method($($arg),*),
        }
    };
}

impl<'a> Context<'a> {
    /// A context over `host`.
    pub fn new(host: &'a dyn Host) -> Self {
        Context {
            host: Backend::Dyn(host),
        }
    }

    /// The context of a real invocation: the host's imports.
    pub(crate) fn imports() -> Context<'static> {
        #[cfg(feature = "bench-every-import")]
        return Context::new(&crate::__guest::WitHost);
        #[cfg(not(feature = "bench-every-import"))]
        Context {
            host: Backend::Imports,
        }
    }

    /// The current time (ms since the epoch), from the host's clock.
    pub fn now(&self) -> Timestamp {
        host!(self.now())
    }

    /// Write a log line attributed to this plugin.
    pub fn log(&self, level: LogLevel, message: &str) {
        host!(self.log(level, message))
    }

    /// Log at info level.
    pub fn info(&self, message: &str) {
        self.log(LogLevel::Info, message)
    }

    /// Log at warn level.
    pub fn warn(&self, message: &str) {
        self.log(LogLevel::Warn, message)
    }

    /// Read this plugin's state.
    pub fn state_get(&self, key: &str) -> Option<String> {
        host!(self.state_get(key))
    }

    /// Write this plugin's state; kept only if this invocation succeeds.
    pub fn state_set(&self, key: &str, value: &str, ttl_ms: Option<u64>) {
        host!(self.state_set(key, value, ttl_ms))
    }

    /// Delete a key from this plugin's state.
    pub fn state_delete(&self, key: &str) {
        host!(self.state_delete(key))
    }

    /// Have this rule called back ([`crate::Rule::on_timer`]) after
    /// `delay_ms` (at most 30 days) with `key` and `data`, even across host
    /// restarts. A newer timer with the same key replaces the older. Kept
    /// only if this invocation succeeds, like state writes; rules only.
    pub fn set_timer(&self, key: &str, delay_ms: u64, data: &str) {
        host!(self.timer_set(key, delay_ms, data))
    }

    /// Cancel this rule's pending timer `key`, if any.
    pub fn cancel_timer(&self, key: &str) {
        host!(self.timer_cancel(key))
    }

    /// A value from the `[config]` table of this plugin's manifest.
    pub fn config(&self, key: &str) -> Option<String> {
        host!(self.config(key))
    }

    /// A secret named in this plugin's manifest.
    pub fn secret(&self, name: &str) -> Option<String> {
        host!(self.secret(name))
    }

    /// Send an HTTP request. Only hosts in the manifest's `grants.http.allow`
    /// are reachable; anything else is [`CapabilityError::NotGranted`].
    pub fn http(&self, request: &HttpRequest) -> Result<HttpResponse, CapabilityError> {
        host!(self.http(request))
    }

    /// Containers matching every label of `selector`, within the grant.
    pub fn docker_list_containers(
        &self,
        selector: &Labels,
    ) -> Result<Vec<Container>, CapabilityError> {
        host!(self.docker_list_containers(selector))
    }

    /// Copy container `from` (image, env, labels incl. Traefik's, network)
    /// as a new container, not started. Returns its id.
    pub fn docker_create_replica(
        &self,
        from: &str,
        name: Option<&str>,
    ) -> Result<String, CapabilityError> {
        host!(self.docker_create_replica(from, name))
    }

    /// Create a container (not started). Returns its id.
    pub fn docker_create(&self, spec: &ContainerSpec) -> Result<String, CapabilityError> {
        host!(self.docker_create(spec))
    }

    /// Start a container.
    pub fn docker_start(&self, id: &str) -> Result<(), CapabilityError> {
        host!(self.docker_op(DockerOp::Start, id))
    }

    /// Stop a container, killing it after `timeout_ms`.
    pub fn docker_stop(&self, id: &str, timeout_ms: u32) -> Result<(), CapabilityError> {
        host!(self.docker_op(DockerOp::Stop(timeout_ms), id))
    }

    /// Restart a container, killing it after `timeout_ms`.
    pub fn docker_restart(&self, id: &str, timeout_ms: u32) -> Result<(), CapabilityError> {
        host!(self.docker_op(DockerOp::Restart(timeout_ms), id))
    }

    /// Remove a container, running or not.
    pub fn docker_remove(&self, id: &str) -> Result<(), CapabilityError> {
        host!(self.docker_op(DockerOp::Remove, id))
    }

    /// Wait until the container is healthy (its health check passes, or it
    /// is running if it has none); `false` when `timeout_ms` passes first or
    /// the container exits.
    pub fn docker_wait_healthy(&self, id: &str, timeout_ms: u32) -> Result<bool, CapabilityError> {
        host!(self.docker_wait_healthy(id, timeout_ms))
    }

    /// The engine's inspect document of a container.
    pub fn docker_inspect(&self, id: &str) -> Result<serde_json::Value, CapabilityError> {
        host!(self.docker_inspect(id))
    }

    /// Kubernetes nodes (the `kube` grant's API server).
    pub fn kube_list_nodes(&self) -> Result<Vec<Node>, CapabilityError> {
        host!(self.kube_list_nodes())
    }

    /// One Kubernetes object, e.g. `kube_get("Pod", Some("default"), "web-1")`.
    pub fn kube_get(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<serde_json::Value, CapabilityError> {
        host!(self.kube_get(kind, namespace, name))
    }

    /// Pods (a `PodList`), e.g. with `Some("status.phase=Pending")`.
    pub fn kube_list_pods(
        &self,
        namespace: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<serde_json::Value, CapabilityError> {
        host!(self.kube_list_pods(namespace, field_selector))
    }

    /// Node usage from the metrics API (`metrics.k8s.io`): a
    /// `NodeMetricsList` (`items[].metadata.name`, `items[].usage.cpu`,
    /// `items[].usage.memory`).
    pub fn kube_list_node_metrics(&self) -> Result<serde_json::Value, CapabilityError> {
        host!(self.kube_list_node_metrics())
    }

    /// Cordon `node` (`true`) or make it schedulable again. Needs the
    /// `cordon` write in the manifest's `grants.kube.write`.
    pub fn kube_cordon(&self, node: &str, unschedulable: bool) -> Result<(), CapabilityError> {
        host!(self.kube_cordon(node, unschedulable))
    }

    /// Evict a pod; a disruption budget that forbids it now is
    /// `unavailable`, a pod already gone is success. Needs `evict`.
    pub fn kube_evict(&self, namespace: &str, pod: &str) -> Result<(), CapabilityError> {
        host!(self.kube_evict(namespace, pod))
    }

    /// Delete the `node` object (one already gone is success). Needs
    /// `delete`.
    pub fn kube_delete_node(&self, node: &str) -> Result<(), CapabilityError> {
        host!(self.kube_delete_node(node))
    }

    /// The notifiers for `severity`: config `channels.<severity>` (e.g.
    /// `"channels.critical" = "notifier-slack,notifier-email"` in the
    /// manifest; the key is quoted), else
    /// `channels`, else `notifier-log`. Comma-separated; `none` for no
    /// notification at that severity.
    pub fn channels(&self, severity: Severity) -> Vec<String> {
        let key = format!("channels.{}", severity.as_str());
        let list = self
            .config(&key)
            .or_else(|| self.config("channels"))
            .unwrap_or_else(|| "notifier-log".into());
        list.split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty() && *c != "none")
            .map(str::to_owned)
            .collect()
    }

    /// Send `mail` through the granted SMTP server; the message id.
    pub fn send_mail(&self, mail: &Mail) -> Result<String, CapabilityError> {
        host!(self.smtp_send(mail))
    }
}
