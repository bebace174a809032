//! The periodic cluster check (seed 002's autoscaler loop): on each
//! scheduled call (`[schedule] every_secs`, the seed's
//! `min_violation_check_interval`) the rule reads the cluster through
//! `kube` (nodes, pending pods, node metrics), compares it with what it saw
//! last time (plugin state) and says what it found with the seed's named
//! signals, scaling up or down where that is the answer.
//!
//! What one check emits, in this order:
//! 1. `NodeUnexpectedlyLost` for each worker gone that the rule did not
//!    remove itself; `NodeHealthDegraded` for each worker newly NotReady.
//! 2. `ClusterStateSynced` when the cluster is as desired (every worker
//!    Ready, between min and max, no pending pods, no scaling in flight)
//!    and was not at the last check.
//! 3. The first that applies:
//!    - fewer Ready workers than `min_nodes`: `MinimumNodesViolation`,
//!      then (with `auto_scale_to_min`) `AutoScaleUpToMinimum`, or
//!      `EmergencyScaleUp` when `emergency_threshold` or more are missing,
//!      and `ScaleUpStarted` with the node-add action;
//!    - pods pending: `PendingPodsDetected`, `ScaleUpStarted` + one node;
//!    - CPU above `cpu_high_pct` or memory above `memory_high_pct`:
//!      `ResourcePressureAlert`, `ScaleUpStarted` + one node;
//!    - CPU below `cpu_low_pct` and memory below `memory_low_pct` with more
//!      than `min_nodes` workers: `UnderutilizationWarning` (from the
//!      second such check on); once that has lasted `underutilized_secs`,
//!      `ScaleDownBlocked` while a worker is NotReady, else
//!      `OptimalStateTrigger` (what it would be at one fewer),
//!      `ScaleDownDecision` and `ScaleDownStarted` with the node-remove
//!      action on the newest worker; at `min_nodes`, `OptimalStateTrigger`
//!      once.
//!
//! Each episode opens (or joins) an incident, so its signals are on a
//! timeline: `min-nodes:<pool>` (critical), `capacity:<pool>` (warning),
//! `scale-down:<pool>` (info). While a scaling action is in flight no
//! other is asked for (`scaling_timeout_secs` at most); the action's
//! outcome carries the flow on (`lib.rs`).

use eventpulse_sdk::{ActionRequest, Context, Decision, Error, IncidentOpen, Node, Severity};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Settings;

/// What the rule remembers about a pool between checks.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Memory {
    /// Workers seen at the last check.
    pub workers: Vec<String>,
    /// Workers seen NotReady at the last check.
    pub degraded: Vec<String>,
    /// Workers the rule is removing (not "unexpectedly lost").
    pub removing: Vec<String>,
    /// Since when (ms) the pool has been underutilised.
    pub underutilized_since: Option<u64>,
    /// Whether the last check found the state as desired.
    pub synced: bool,
    /// Whether `OptimalStateTrigger` (at minimum) was said this episode.
    pub optimal: bool,
    /// Whether the current violation, pending or pressure episode was said.
    pub episode: Option<String>,
    /// A scaling action is in flight until this time (ms).
    pub scaling_until: Option<u64>,
    /// The scale-up in flight answers a minimum violation.
    pub restoring: bool,
}

impl Memory {
    fn key(pool: &str) -> String {
        format!("cluster:{pool}")
    }

    /// The pool's memory (empty at first).
    pub fn load(cx: &Context<'_>, pool: &str) -> Memory {
        cx.state_get(&Memory::key(pool))
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default()
    }

    /// Keep it for the next check.
    pub fn save(&self, cx: &Context<'_>, pool: &str) {
        cx.state_set(
            &Memory::key(pool),
            &serde_json::to_string(self).expect("memory serialises"),
            None,
        );
    }

    fn scaling(&self, now: u64) -> bool {
        self.scaling_until.is_some_and(|t| t > now)
    }
}

/// CPU cores in a Kubernetes quantity (`2`, `250m`, `123456789n`).
pub fn cores(q: &str) -> Option<f64> {
    let q = q.trim();
    let (num, scale) = match q.chars().last()? {
        'n' => (&q[..q.len() - 1], 1e-9),
        'u' => (&q[..q.len() - 1], 1e-6),
        'm' => (&q[..q.len() - 1], 1e-3),
        _ => (q, 1.0),
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

/// Bytes in a Kubernetes quantity (`1024`, `512Ki`, `3Gi`, `1M`).
pub fn bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    let units: [(&str, f64); 8] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024f64.powi(4)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (suffix, scale) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * scale);
        }
    }
    q.parse().ok()
}

/// What a check read from the cluster.
struct Seen {
    workers: Vec<Node>,
    ready: Vec<String>,
    not_ready: Vec<String>,
    pending: Vec<serde_json::Value>,
    /// Average CPU and memory use of the Ready workers, in percent of
    /// allocatable (`None` without metrics).
    usage: Option<(f64, f64)>,
}

fn is_worker(n: &Node) -> bool {
    !n.roles
        .iter()
        .any(|r| r == "control-plane" || r == "master" || r == "etcd")
}

fn read(cx: &Context<'_>) -> Result<Seen, Error> {
    let workers: Vec<Node> = cx
        .kube_list_nodes()?
        .into_iter()
        .filter(is_worker)
        .collect();
    let ready: Vec<String> = workers
        .iter()
        .filter(|n| n.ready)
        .map(|n| n.name.clone())
        .collect();
    let not_ready = workers
        .iter()
        .filter(|n| !n.ready)
        .map(|n| n.name.clone())
        .collect();
    let pending = cx.kube_list_pods(None, Some("status.phase=Pending"))?["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let metrics = cx.kube_list_node_metrics()?;
    let (mut cpu, mut mem, mut n) = (0.0, 0.0, 0.0);
    for m in metrics["items"].as_array().into_iter().flatten() {
        let name = m["metadata"]["name"].as_str().unwrap_or_default();
        let Some(node) = workers.iter().find(|w| w.name == name && w.ready) else {
            continue;
        };
        let alloc = |k: &str| node.allocatable.get(k).map(str::to_owned);
        let (Some(c), Some(c_max), Some(b), Some(b_max)) = (
            m["usage"]["cpu"].as_str().and_then(cores),
            alloc("cpu").as_deref().and_then(cores),
            m["usage"]["memory"].as_str().and_then(bytes),
            alloc("memory").as_deref().and_then(bytes),
        ) else {
            continue;
        };
        if c_max > 0.0 && b_max > 0.0 {
            cpu += 100.0 * c / c_max;
            mem += 100.0 * b / b_max;
            n += 1.0;
        }
    }
    Ok(Seen {
        workers,
        ready,
        not_ready,
        pending,
        usage: (n > 0.0).then(|| (cpu / n, mem / n)),
    })
}

/// The deployments pending pods belong to (through their ReplicaSets'
/// names: `web-7d8f` → `web`).
fn affected(pending: &[serde_json::Value]) -> Vec<String> {
    let mut out: Vec<String> = pending
        .iter()
        .filter_map(|p| {
            let owner = p["metadata"]["ownerReferences"].as_array()?.first()?;
            let name = owner["name"].as_str()?;
            Some(match owner["kind"].as_str() {
                Some("ReplicaSet") => name.rsplit_once('-').map_or(name, |(d, _)| d).to_owned(),
                _ => name.to_owned(),
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// One check of `pool`.
pub fn run(cx: &Context<'_>, s: &Settings, pool: &str) -> Result<Decision, Error> {
    let now = cx.now();
    let seen = read(cx)?;
    let mut mem = Memory::load(cx, pool);
    let names: Vec<String> = seen.workers.iter().map(|n| n.name.clone()).collect();
    let ready = seen.ready.len() as u64;
    let mut d = Decision::none();
    let mut incident: Option<IncidentOpen> = None;
    let open = |key: &str, severity: Severity, title: String, summary: String| IncidentOpen {
        title,
        service: pool.to_owned(),
        severity,
        dedup_key: format!("{key}:{pool}"),
        summary,
    };
    let scaling = mem.scaling(now);
    if !scaling {
        mem.scaling_until = None;
    }

    // 1. What changed since the last check.
    let mut lost = Vec::new();
    for gone in mem.workers.iter().filter(|w| !names.contains(w)) {
        if mem.removing.contains(gone) {
            continue;
        }
        lost.push(gone.clone());
        d = d.signal(
            "NodeUnexpectedlyLost",
            json!({"pool": pool, "node_name": gone, "last_seen": now.saturating_sub(s.every_ms), "cause": "disappeared"}),
        );
    }
    for sick in seen.not_ready.iter().filter(|n| !mem.degraded.contains(n)) {
        d = d.signal(
            "NodeHealthDegraded",
            json!({"pool": pool, "node_name": sick, "status": "NotReady", "last_check": now}),
        );
    }

    // 2. As desired?
    let pressure = seen
        .usage
        .is_some_and(|(c, m)| c > s.cpu_high || m > s.memory_high);
    let synced = seen.not_ready.is_empty()
        && lost.is_empty()
        && ready >= s.min
        && ready <= s.max
        && seen.pending.is_empty()
        && !pressure
        && !scaling;
    if synced && !mem.synced {
        d = d.signal(
            "ClusterStateSynced",
            json!({"pool": pool, "k8s_nodes": names.len(), "workers": ready, "last_sync": now}),
        );
    }

    // 3. What to do about it.
    let (cpu, memory) = seen.usage.unwrap_or((f64::NAN, f64::NAN));
    let underutilized = seen.usage.is_some() && cpu < s.cpu_low && memory < s.memory_low;
    let mut episode = None;
    if ready < s.min {
        episode = Some("violation".to_owned());
        let missing = s.min - ready;
        let title = format!("k3s pool {pool} below minimum: {ready}/{} workers", s.min);
        incident = Some(open(
            "min-nodes",
            Severity::Critical,
            title.clone(),
            format!("{missing} worker(s) missing"),
        ));
        if mem.episode.as_deref() != Some("violation") {
            d = d.signal(
                "MinimumNodesViolation",
                json!({"pool": pool, "current_workers": ready, "min_workers": s.min, "violation_time": now}),
            );
        }
        if s.auto_scale_to_min && !scaling {
            let add = missing.min(s.max.saturating_sub(ready));
            d = crate::to_minimum(d, s, pool, ready, missing, add);
            d = scale_up(d, s, pool, ready, add, "minimum_violation", &mut mem, now);
            mem.restoring = true;
            d = crate::notify_adding(d, cx, pool, &title, add);
        }
    } else if !seen.pending.is_empty() || pressure {
        let why = if seen.pending.is_empty() {
            "resource_pressure"
        } else {
            "pending_pods"
        };
        episode = Some(why.to_owned());
        incident = Some(open(
            "capacity",
            Severity::Warning,
            format!("k3s pool {pool} needs capacity"),
            why.replace('_', " "),
        ));
        if mem.episode.as_deref() != Some(why) {
            d = if why == "pending_pods" {
                d.signal(
                    "PendingPodsDetected",
                    json!({"pool": pool, "pending_count": seen.pending.len(), "waiting_time_ms": s.every_ms, "affected_deployments": affected(&seen.pending)}),
                )
            } else {
                d.signal(
                    "ResourcePressureAlert",
                    json!({"pool": pool, "cpu_avg": round(cpu), "memory_avg": round(memory), "workers": ready, "max_workers": s.max}),
                )
            };
        }
        if !scaling && ready < s.max {
            d = scale_up(d, s, pool, ready, 1, why, &mut mem, now);
        }
        if underutilized && ready > s.min && why == "pending_pods" {
            d = d.signal(
                "ScaleDownBlocked",
                json!({"pool": pool, "reason": "pending_pods", "pending_count": seen.pending.len(), "workers": ready, "min_workers": s.min}),
            );
        }
    } else if underutilized && ready > s.min {
        let since = *mem.underutilized_since.get_or_insert(now);
        let lasted = now - since;
        if lasted > 0 {
            incident = Some(open(
                "scale-down",
                Severity::Info,
                format!("k3s pool {pool} underutilised"),
                format!("{ready} workers, {} minimum", s.min),
            ));
            // Said once an episode, from its second check on.
            if mem.episode.is_none() {
                d = d.signal(
                    "UnderutilizationWarning",
                    json!({"pool": pool, "workers": ready, "min_workers": s.min, "cpu_avg": round(cpu), "memory_avg": round(memory), "duration_ms": lasted}),
                );
            }
            episode = Some("underutilized".to_owned());
        }
        if lasted >= s.underutilized_ms && !scaling {
            if !seen.not_ready.is_empty() {
                if mem.episode.as_deref() != Some("blocked") {
                    d = d.signal(
                        "ScaleDownBlocked",
                        json!({"pool": pool, "reason": "unhealthy_nodes", "unhealthy": seen.not_ready, "workers": ready, "min_workers": s.min}),
                    );
                }
                episode = Some("blocked".to_owned());
            } else {
                // The newest worker goes: the last by name (node-add names
                // carry their action's time-ordered id).
                let node = seen
                    .ready
                    .iter()
                    .max()
                    .cloned()
                    .expect("more than min workers");
                d = d
                    .signal(
                        "OptimalStateTrigger",
                        json!({"pool": pool, "state": "would_trigger", "current_workers": ready, "at_workers": ready - 1, "min_workers": s.min, "cpu_avg": round(cpu), "memory_avg": round(memory)}),
                    )
                    .signal(
                        "ScaleDownDecision",
                        json!({"pool": pool, "action": "scale_down", "from_workers": ready, "to_workers": ready - 1, "node": node}),
                    )
                    .signal(
                        "ScaleDownStarted",
                        json!({"pool": pool, "node": node, "previous_workers": ready}),
                    )
                    .action(
                        ActionRequest::new(&s.remove_action, pool)
                            .param("node", node.clone())
                            .param("previous_workers", ready)
                            .param("check", true)
                            .reason(format!(
                                "{pool} underutilised for {} s",
                                lasted / 1000
                            )),
                    );
                mem.removing.push(node);
                mem.scaling_until = Some(now + s.scaling_timeout_ms);
                mem.underutilized_since = None;
            }
        }
    } else if underutilized && ready == s.min && !mem.optimal {
        mem.optimal = true;
        d = d.signal(
            "OptimalStateTrigger",
            json!({"pool": pool, "state": "active", "current_workers": ready, "min_workers": s.min, "cpu_avg": round(cpu), "memory_avg": round(memory)}),
        );
    }
    if !(underutilized && ready > s.min) {
        mem.underutilized_since = None;
    }
    if !(underutilized && ready == s.min) {
        mem.optimal = false;
    }

    // A worker the rule removed is forgotten once it is gone.
    mem.removing.retain(|n| names.contains(n));
    mem.workers = names;
    mem.degraded = seen.not_ready.clone();
    mem.synced = synced && !mem.scaling(now);
    mem.episode = episode;
    mem.save(cx, pool);
    if let Some(open) = incident {
        d = d.open_incident(open);
    }
    if d.signals.is_empty() && d.actions.is_empty() {
        d = d.note(format!(
            "{pool}: {ready} Ready worker(s), {} pending pod(s)",
            seen.pending.len()
        ));
    }
    Ok(d)
}

#[allow(clippy::too_many_arguments)]
fn scale_up(
    d: Decision,
    s: &Settings,
    pool: &str,
    ready: u64,
    add: u64,
    reason: &str,
    mem: &mut Memory,
    now: u64,
) -> Decision {
    mem.scaling_until = Some(now + s.scaling_timeout_ms);
    mem.synced = false;
    d.signal(
        "ScaleUpStarted",
        json!({"pool": pool, "count": add, "previous_workers": ready, "reason": reason}),
    )
    .action(
        ActionRequest::new(&s.action, pool)
            .param("add", add)
            .param("previous_workers", ready)
            .param("check", true)
            .reason(format!("{pool}: {reason} with {ready} Ready worker(s)")),
    )
}

/// The seed's scenarios against a fake cluster: each yields the seed's
/// signal sequence, one check (or action outcome) at a time.
#[cfg(test)]
mod tests {
    use eventpulse_sdk::testing::{FakeHost, alert_event};
    use eventpulse_sdk::{
        ActionOutcome, ActionResult, AlertStatus, Decision, Event, IncidentDirective, Labels, Node,
        Rule, Timer,
    };

    use crate::MinNodes;

    const EVERY: u64 = 10_000;

    fn node(name: &str, ready: bool) -> Node {
        Node {
            name: name.into(),
            ready,
            roles: vec![],
            labels: Labels::default(),
            allocatable: Labels(vec![
                ("cpu".into(), "2".into()),
                ("memory".into(), "4Gi".into()),
            ]),
            unschedulable: false,
        }
    }

    fn server() -> Node {
        Node {
            roles: vec!["control-plane".into()],
            ..node("k3s-server", true)
        }
    }

    /// A cluster of the server plus `workers`, each using `cpu` cores of 2
    /// and `mem_gi` GiB of 4.
    fn cluster(workers: &[&str], cpu: f64, mem_gi: f64) -> FakeHost {
        let host = FakeHost::new()
            .at(1_000_000)
            .config("min_nodes", "2")
            .config("max_nodes", "5")
            .config("underutilized_secs", "20")
            .kube_cluster(vec![], false);
        set(&host, workers, &[], cpu, mem_gi);
        host
    }

    fn set(host: &FakeHost, ready: &[&str], not_ready: &[&str], cpu: f64, mem_gi: f64) {
        let mut nodes = vec![server()];
        nodes.extend(ready.iter().map(|n| node(n, true)));
        nodes.extend(not_ready.iter().map(|n| node(n, false)));
        host.set_nodes(nodes);
        let usage: Vec<(&str, f64, u64)> = ready
            .iter()
            .map(|n| (*n, cpu, (mem_gi * 1024.0 * 1024.0 * 1024.0) as u64))
            .collect();
        host.set_node_metrics(&usage);
    }

    fn tick(host: &FakeHost) -> Decision {
        host.advance(EVERY);
        let mut event = alert_event("x", AlertStatus::Firing, &[]);
        event.kind = eventpulse_sdk::TIMER_FIRED.into();
        event.alert = None;
        let timer = Timer {
            key: "schedule".into(),
            data: String::new(),
        };
        MinNodes.on_timer(&event, &timer, &host.context()).unwrap()
    }

    fn done(host: &FakeHost, asked: &Decision, details: serde_json::Value) -> Decision {
        let outcome = ActionOutcome {
            action_id: "a1".into(),
            request: asked.actions[0].clone(),
            result: Ok(ActionResult {
                summary: "done".into(),
                details,
            }),
            attempts: 1,
        };
        let event = Event {
            kind: "action.completed".into(),
            ..alert_event("x", AlertStatus::Firing, &[])
        };
        MinNodes
            .on_action_completed(&event, &outcome, &host.context())
            .unwrap()
    }

    fn names(d: &Decision) -> Vec<&str> {
        d.signals.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn state_sync_is_said_once() {
        let host = cluster(&["w1", "w2", "w3"], 1.0, 2.0);
        let d = tick(&host);
        assert_eq!(names(&d), ["ClusterStateSynced"]);
        assert_eq!(d.signals[0].data["workers"], 3);
        assert_eq!(d.signals[0].data["k8s_nodes"], 3);
        assert!(names(&tick(&host)).is_empty(), "nothing new to say");
    }

    #[test]
    fn normal_scale_down() {
        // 3 workers at 10 % CPU, 25 % memory: under the 30 % / 40 % marks.
        let host = cluster(&["w1", "w2", "w3"], 0.2, 1.0);
        let mut seen: Vec<String> = Vec::new();
        let mut keep = |d: &Decision| seen.extend(names(d).iter().map(|s| s.to_string()));
        keep(&tick(&host));
        keep(&tick(&host));
        let decided = tick(&host);
        keep(&decided);
        assert_eq!(decided.actions[0].action, "action-k3s-node-remove");
        assert_eq!(decided.actions[0].params["node"], "w3", "the newest goes");
        set(&host, &["w1", "w2"], &[], 0.2, 1.0);
        keep(&done(&host, &decided, serde_json::json!({"node": "w3"})));
        keep(&tick(&host));
        assert_eq!(
            seen,
            [
                "ClusterStateSynced",
                "UnderutilizationWarning",
                "OptimalStateTrigger",
                "ScaleDownDecision",
                "ScaleDownStarted",
                "ScalingActionCompleted",
                "OptimalStateTrigger",
                "ClusterStateSynced",
            ]
        );
    }

    #[test]
    fn node_failure_recovers_to_minimum() {
        let host = cluster(&["w1", "w2"], 1.0, 2.0);
        assert_eq!(names(&tick(&host)), ["ClusterStateSynced"]);
        set(&host, &["w1"], &[], 1.0, 2.0);
        let lost = tick(&host);
        assert_eq!(
            names(&lost),
            [
                "NodeUnexpectedlyLost",
                "MinimumNodesViolation",
                "AutoScaleUpToMinimum",
                "ScaleUpStarted"
            ]
        );
        assert_eq!(lost.signals[0].data["node_name"], "w2");
        assert_eq!(lost.actions[0].action, "action-k3s-node-add");
        assert_eq!(lost.actions[0].params["add"], 1);
        assert!(matches!(lost.incident, Some(IncidentDirective::Open(_))));
        // While the node is added, no second action.
        assert!(tick(&host).actions.is_empty());
        set(&host, &["w1", "w14"], &[], 1.0, 2.0);
        let back = done(
            &host,
            &lost,
            serde_json::json!({"nodes": ["w14"], "waited_ms": 900}),
        );
        assert_eq!(
            names(&back),
            [
                "NodeCreated",
                "NodeReady",
                "ScalingActionCompleted",
                "MinimumNodesRestored",
                "ClusterStateSynced"
            ]
        );
        assert!(names(&tick(&host)).is_empty());
    }

    #[test]
    fn several_nodes_lost_at_once_is_an_emergency() {
        let host = cluster(&["w1", "w2", "w3"], 1.0, 2.0).config("min_nodes", "3");
        tick(&host);
        set(&host, &["w1"], &[], 1.0, 2.0);
        let d = tick(&host);
        assert_eq!(
            names(&d),
            [
                "NodeUnexpectedlyLost",
                "NodeUnexpectedlyLost",
                "MinimumNodesViolation",
                "EmergencyScaleUp",
                "ScaleUpStarted"
            ]
        );
        assert_eq!(d.actions[0].params["add"], 2);
    }

    #[test]
    fn resource_pressure_scales_up_at_once() {
        // 90 % CPU.
        let host = cluster(&["w1", "w2"], 1.8, 2.0);
        let d = tick(&host);
        assert_eq!(names(&d), ["ResourcePressureAlert", "ScaleUpStarted"]);
        assert_eq!(d.signals[0].data["cpu_avg"], 90.0);
        assert_eq!(d.actions[0].params["add"], 1);
    }

    #[test]
    fn pending_pods_scale_up_at_once() {
        let host = cluster(&["w1", "w2"], 1.0, 2.0);
        host.set_pods(vec![serde_json::json!({
            "metadata": {"name": "api-5f9c-x", "namespace": "shop", "ownerReferences": [{"kind": "ReplicaSet", "name": "api-5f9c"}]},
            "status": {"phase": "Pending"},
        })]);
        let d = tick(&host);
        assert_eq!(names(&d), ["PendingPodsDetected", "ScaleUpStarted"]);
        assert_eq!(
            d.signals[0].data["affected_deployments"],
            serde_json::json!(["api"])
        );
    }

    #[test]
    fn an_unhealthy_node_blocks_scale_down() {
        let host = cluster(&["w1", "w2", "w3"], 0.2, 1.0);
        set(&host, &["w1", "w2", "w3"], &["w4"], 0.2, 1.0);
        assert_eq!(names(&tick(&host)), ["NodeHealthDegraded"]);
        assert_eq!(names(&tick(&host)), ["UnderutilizationWarning"]);
        let d = tick(&host);
        assert_eq!(names(&d), ["ScaleDownBlocked"]);
        assert_eq!(d.signals[0].data["reason"], "unhealthy_nodes");
        assert!(d.actions.is_empty());
        assert!(names(&tick(&host)).is_empty(), "said once");
    }

    #[test]
    fn without_auto_scale_to_min_a_violation_is_only_said() {
        let host = cluster(&["w1"], 1.0, 2.0).config("auto_scale_to_min", "false");
        let d = tick(&host);
        assert_eq!(names(&d), ["MinimumNodesViolation"]);
        assert!(d.actions.is_empty());
    }
}
