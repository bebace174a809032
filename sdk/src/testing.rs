//! Fake capabilities for testing plugins natively with `cargo test`.
//!
//! ```
//! use eventpulse_sdk::testing::FakeHost;
//!
//! let host = FakeHost::new().at(1_000).config("service", "app");
//! let cx = host.context();
//! assert_eq!(cx.now(), 1_000);
//! cx.state_set("k", "v", Some(500));
//! host.advance(600);
//! assert_eq!(cx.state_get("k"), None, "expired with the clock");
//! ```

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use crate::context::{Context, Host, LogLevel, Node};
use crate::model::{Alert, AlertStatus, Correlation, Event, Labels, Severity, Timestamp};

/// An in-memory host: a settable clock, state with TTLs, config, secrets and
/// captured log lines.
#[derive(Default)]
pub struct FakeHost {
    now: Cell<Timestamp>,
    state: RefCell<BTreeMap<String, (String, Option<Timestamp>)>>,
    config: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
    logs: RefCell<Vec<(LogLevel, String)>>,
    timers: RefCell<BTreeMap<String, (Timestamp, String)>>,
    kube: Option<BTreeMap<(String, String, String), serde_json::Value>>,
    cluster: RefCell<Option<Cluster>>,
}

/// A fake cluster behind `kube`: nodes, pods, node metrics, and the writes
/// made, which change it as the API server would.
#[derive(Default, Clone)]
struct Cluster {
    nodes: Vec<Node>,
    pods: Vec<serde_json::Value>,
    metrics: Vec<serde_json::Value>,
    writes: Vec<String>,
    write_granted: bool,
}

impl FakeHost {
    /// A host at time 0 with nothing configured.
    pub fn new() -> Self {
        FakeHost::default()
    }

    /// Pending timers: `(key, due at, data)`, in key order.
    pub fn timers(&self) -> Vec<(String, Timestamp, String)> {
        self.timers
            .borrow()
            .iter()
            .map(|(k, (due, data))| (k.clone(), *due, data.clone()))
            .collect()
    }

    /// The `timer.fired` event of pending timer `key`, as the host would
    /// deliver it to a rule for `parent` (taking it off the pending list).
    pub fn fire(&self, key: &str, parent: &Event) -> Option<(Event, crate::Timer)> {
        let (_, data) = self.timers.borrow_mut().remove(key)?;
        let timer = crate::Timer {
            key: key.to_owned(),
            data,
        };
        let mut event = parent.clone();
        event.kind = crate::TIMER_FIRED.into();
        event.data = serde_json::to_string(&timer).expect("timers serialise");
        Some((event, timer))
    }

    /// Set the clock.
    pub fn at(self, now: Timestamp) -> Self {
        self.now.set(now);
        self
    }

    /// Add a config value.
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// Add a secret.
    pub fn secret(mut self, name: &str, value: &str) -> Self {
        self.secrets.insert(name.into(), value.into());
        self
    }

    /// Grant `kube` and serve `object` for `get(kind, namespace, name)`;
    /// other objects answer 404 (`failed`). Without any, `kube` is not
    /// granted.
    pub fn kube_object(
        mut self,
        kind: &str,
        namespace: &str,
        name: &str,
        object: serde_json::Value,
    ) -> Self {
        self.kube
            .get_or_insert_with(BTreeMap::new)
            .insert((kind.into(), namespace.into(), name.into()), object);
        self
    }

    /// Grant `kube` over a fake cluster of `nodes` (writes allowed when
    /// `writes` is true: cordon, evict and delete change the cluster).
    pub fn kube_cluster(self, nodes: Vec<Node>, writes: bool) -> Self {
        *self.cluster.borrow_mut() = Some(Cluster {
            nodes,
            write_granted: writes,
            ..Cluster::default()
        });
        self
    }

    /// Replace the fake cluster's nodes.
    pub fn set_nodes(&self, nodes: Vec<Node>) {
        if let Some(c) = self.cluster.borrow_mut().as_mut() {
            c.nodes = nodes;
        }
    }

    /// Replace the fake cluster's pods (`Pod` objects; `list-pods` filters
    /// them by `a.b=c` field selectors).
    pub fn set_pods(&self, pods: Vec<serde_json::Value>) {
        if let Some(c) = self.cluster.borrow_mut().as_mut() {
            c.pods = pods;
        }
    }

    /// Replace the node metrics: `(node, cpu cores used, memory bytes used)`.
    pub fn set_node_metrics(&self, usage: &[(&str, f64, u64)]) {
        if let Some(c) = self.cluster.borrow_mut().as_mut() {
            c.metrics = usage
                .iter()
                .map(|(name, cpu, mem)| {
                    serde_json::json!({
                        "metadata": {"name": name},
                        "usage": {"cpu": format!("{}m", (cpu * 1000.0) as u64), "memory": format!("{}Ki", mem / 1024)},
                    })
                })
                .collect();
        }
    }

    /// The kube writes made, e.g. `cordon w3 true`, `evict shop/web-1`,
    /// `delete w3`.
    pub fn kube_writes(&self) -> Vec<String> {
        self.cluster
            .borrow()
            .as_ref()
            .map(|c| c.writes.clone())
            .unwrap_or_default()
    }

    fn kube_write(
        &self,
        what: String,
        apply: impl FnOnce(&mut Cluster),
    ) -> Result<(), crate::CapabilityError> {
        let mut cluster = self.cluster.borrow_mut();
        let c = cluster
            .as_mut()
            .ok_or_else(|| crate::CapabilityError::NotGranted("kube".into()))?;
        if !c.write_granted {
            return Err(crate::CapabilityError::NotGranted(format!(
                "kube write: {what}"
            )));
        }
        apply(c);
        c.writes.push(what);
        Ok(())
    }

    fn with_cluster<T>(
        &self,
        read: impl FnOnce(&Cluster) -> T,
    ) -> Result<T, crate::CapabilityError> {
        self.cluster
            .borrow()
            .as_ref()
            .map(read)
            .ok_or_else(|| crate::CapabilityError::NotGranted("kube".into()))
    }

    /// Move the clock forward.
    pub fn advance(&self, ms: u64) {
        self.now.set(self.now.get() + ms);
    }

    /// A [`Context`] over this host.
    pub fn context(&self) -> Context<'_> {
        Context::new(self)
    }

    /// Captured log lines.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.logs.borrow().clone()
    }
}

impl Host for FakeHost {
    fn log(&self, level: LogLevel, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }

    fn now(&self) -> Timestamp {
        self.now.get()
    }

    fn state_get(&self, key: &str) -> Option<String> {
        let now = self.now.get();
        let state = self.state.borrow();
        match state.get(key) {
            Some((v, expires)) if expires.is_none_or(|e| e > now) => Some(v.clone()),
            _ => None,
        }
    }

    fn state_set(&self, key: &str, value: &str, ttl_ms: Option<u64>) {
        let expires = ttl_ms.map(|t| self.now.get() + t);
        self.state
            .borrow_mut()
            .insert(key.to_owned(), (value.to_owned(), expires));
    }

    fn kube_get(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<serde_json::Value, crate::CapabilityError> {
        let objects = self
            .kube
            .as_ref()
            .ok_or_else(|| crate::CapabilityError::NotGranted("kube".into()))?;
        let key = (
            kind.to_owned(),
            namespace.unwrap_or("").to_owned(),
            name.to_owned(),
        );
        objects
            .get(&key)
            .cloned()
            .ok_or_else(|| crate::CapabilityError::Failed(format!("kube: {kind} {name}: HTTP 404")))
    }

    fn kube_list_nodes(&self) -> Result<Vec<Node>, crate::CapabilityError> {
        self.with_cluster(|c| c.nodes.clone())
    }

    fn kube_list_pods(
        &self,
        namespace: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<serde_json::Value, crate::CapabilityError> {
        self.with_cluster(|c| {
            let wanted = |pod: &serde_json::Value| {
                namespace.is_none_or(|ns| pod["metadata"]["namespace"] == ns)
                    && field_selector.unwrap_or("").split(',').filter(|f| !f.is_empty()).all(|f| {
                        let (path, value) = f.split_once('=').unwrap_or((f, ""));
                        let found = path.split('.').fold(pod, |v, k| &v[k]);
                        found.as_str() == Some(value)
                    })
            };
            serde_json::json!({"kind": "PodList", "items": c.pods.iter().filter(|p| wanted(p)).collect::<Vec<_>>()})
        })
    }

    fn kube_list_node_metrics(&self) -> Result<serde_json::Value, crate::CapabilityError> {
        self.with_cluster(|c| serde_json::json!({"kind": "NodeMetricsList", "items": c.metrics}))
    }

    fn kube_cordon(&self, node: &str, unschedulable: bool) -> Result<(), crate::CapabilityError> {
        self.kube_write(format!("cordon {node} {unschedulable}"), |c| {
            for n in c.nodes.iter_mut().filter(|n| n.name == node) {
                n.unschedulable = unschedulable;
            }
        })
    }

    fn kube_evict(&self, namespace: &str, pod: &str) -> Result<(), crate::CapabilityError> {
        self.kube_write(format!("evict {namespace}/{pod}"), |c| {
            c.pods.retain(|p| {
                !(p["metadata"]["namespace"] == namespace && p["metadata"]["name"] == pod)
            });
        })
    }

    fn kube_delete_node(&self, node: &str) -> Result<(), crate::CapabilityError> {
        self.kube_write(format!("delete {node}"), |c| {
            c.nodes.retain(|n| n.name != node)
        })
    }

    fn state_delete(&self, key: &str) {
        self.state.borrow_mut().remove(key);
    }

    fn timer_set(&self, key: &str, delay_ms: u64, data: &str) {
        let due = self.now.get() + delay_ms;
        self.timers
            .borrow_mut()
            .insert(key.to_owned(), (due, data.to_owned()));
    }

    fn timer_cancel(&self, key: &str) {
        self.timers.borrow_mut().remove(key);
    }

    fn config(&self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }

    fn secret(&self, name: &str) -> Option<String> {
        self.secrets.get(name).cloned()
    }
}

/// An `alert.raised` event for alert `name` with `labels`, as the host
/// would build it from an Alertmanager webhook.
pub fn alert_event(name: &str, status: AlertStatus, labels: &[(&str, &str)]) -> Event {
    let mut all: Labels = labels.iter().copied().collect();
    all.insert("alertname", name);
    let severity = all.get("severity").and_then(Severity::parse);
    Event {
        id: format!("evt-{name}"),
        kind: crate::ALERT_RAISED.into(),
        source: "test".into(),
        time: 0,
        trace_id: "trace".into(),
        key: all.get("service").unwrap_or_default().to_owned(),
        correlation: Correlation {
            alert_id: Some(format!("alert-{name}")),
            ..Correlation::default()
        },
        labels: Labels::default(),
        annotations: Labels::default(),
        alert: Some(Alert {
            fingerprint: format!("fp-{name}"),
            name: name.into(),
            status,
            severity,
            labels: all,
            annotations: Labels::default(),
            starts_at: 0,
            ends_at: None,
            generator_url: None,
        }),
        data: "{}".into(),
    }
}
