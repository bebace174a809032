//! `action-k3s-node-remove` (seed 002): take one k3s worker out of its pool
//! the way an operator would, so no workload is dropped on the floor:
//!
//! 1. cordon the node (no new pods land on it);
//! 2. drain it: evict every pod on it through the Eviction API (disruption
//!    budgets hold; a budget that forbids an eviction now makes the action
//!    retry later), except DaemonSet and mirror pods, as `kubectl drain`
//!    does, and wait until they are gone (`drain_timeout_ms`);
//! 3. delete the Node object;
//! 4. stop and remove the agent container labelled `k3s.node=<node>` in
//!    the pool (`k3s.pool`), if this Docker Engine runs it.
//!
//! Params: `node` (required). Config: `pool` (default `workers`),
//! `drain_timeout_ms` (default 20 000). Every step is idempotent (a node or
//! pod already gone is success), so a retry after a crash converges. The
//! kube writes need `cordon`, `evict` and `delete` in `grants.kube.write`.

use eventpulse_sdk::{Action, ActionRequest, ActionResult, Context, Error, Event, Labels};

/// The action.
#[derive(Default)]
pub struct K3sNodeRemove;

/// Pause between drain polls.
const POLL_MS: u64 = 250;

/// Pods a drain must evict: not DaemonSet-owned, not mirror pods.
pub fn evictable(pods: &serde_json::Value) -> Vec<(String, String)> {
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            let daemon = p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|r| r["kind"] == "DaemonSet"));
            let mirror = p["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string();
            !daemon && !mirror
        })
        .filter_map(|p| {
            Some((
                p["metadata"]["namespace"].as_str()?.to_owned(),
                p["metadata"]["name"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

impl Action for K3sNodeRemove {
    fn description(&self) -> String {
        "removes a k3s worker: cordon, drain, delete the node, remove its container".into()
    }

    fn run(
        &self,
        _event: &Event,
        request: &ActionRequest,
        cx: &Context<'_>,
    ) -> Result<ActionResult, Error> {
        let node = request
            .params
            .get("node")
            .and_then(|v| v.as_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::permanent("params: `node` is required"))?
            .to_owned();
        let pool = cx.config("pool").unwrap_or_else(|| "workers".into());
        let drain_ms: u64 = match cx.config("drain_timeout_ms") {
            None => 20_000,
            Some(v) => v.parse().map_err(|_| {
                Error::permanent(format!("config `drain_timeout_ms`: `{v}` is not a number"))
            })?,
        };
        let before = cx.kube_list_nodes()?;
        let exists = before.iter().any(|n| n.name == node);
        let mut evicted = Vec::new();
        if exists {
            cx.kube_cordon(&node, true)?;
            let on_node = format!("spec.nodeName={node}");
            let mut waited = 0;
            loop {
                let left = evictable(&cx.kube_list_pods(None, Some(&on_node))?);
                if left.is_empty() {
                    break;
                }
                if waited >= drain_ms {
                    return Err(Error::retryable(format!(
                        "{node}: {} pod(s) still on it after {drain_ms} ms",
                        left.len()
                    )));
                }
                for (ns, pod) in &left {
                    cx.kube_evict(ns, pod)?;
                    if !evicted.contains(&format!("{ns}/{pod}")) {
                        evicted.push(format!("{ns}/{pod}"));
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(POLL_MS));
                waited += POLL_MS;
            }
            cx.kube_delete_node(&node)?;
        }
        let selector = Labels(vec![
            ("k3s.pool".into(), pool.clone()),
            ("k3s.node".into(), node.clone()),
        ]);
        let containers = cx.docker_list_containers(&selector)?;
        for c in &containers {
            cx.docker_stop(&c.id, 10_000)?;
            cx.docker_remove(&c.id)?;
        }
        let workers_after = before.iter().filter(|n| n.name != node && n.ready).count();
        Ok(ActionResult {
            summary: format!(
                "removed k3s worker {node} from pool {pool}: {} pod(s) evicted, {} container(s) removed",
                evicted.len(),
                containers.len()
            ),
            details: serde_json::json!({
                "pool": pool,
                "node": node,
                "was_registered": exists,
                "evicted": evicted,
                "containers_removed": containers.len(),
                "ready": workers_after,
            }),
        })
    }
}

eventpulse_sdk::export_action!(K3sNodeRemove);

#[cfg(test)]
mod tests {
    use super::*;
    use eventpulse_sdk::testing::FakeHost;
    use eventpulse_sdk::{Labels, Node};
    use serde_json::json;

    fn node(name: &str) -> Node {
        Node {
            name: name.into(),
            ready: true,
            roles: vec![],
            labels: Labels::default(),
            allocatable: Labels::default(),
            unschedulable: false,
        }
    }

    fn pod(name: &str, node: &str, owner: &str) -> serde_json::Value {
        json!({
            "metadata": {"name": name, "namespace": "shop", "ownerReferences": [{"kind": owner, "name": "x"}]},
            "spec": {"nodeName": node},
            "status": {"phase": "Running"},
        })
    }

    fn request(node: &str) -> ActionRequest {
        ActionRequest::new("action-k3s-node-remove", "workers").param("node", node)
    }

    #[test]
    fn cordons_drains_all_but_daemonsets_and_deletes_the_node() {
        let host = FakeHost::new().kube_cluster(vec![node("w1"), node("w2")], true);
        host.set_pods(vec![
            pod("web-1", "w2", "ReplicaSet"),
            pod("proxy-2", "w2", "DaemonSet"),
            pod("web-2", "w1", "ReplicaSet"),
        ]);
        let event =
            eventpulse_sdk::testing::alert_event("x", eventpulse_sdk::AlertStatus::Firing, &[]);
        let err = K3sNodeRemove
            .run(&event, &request("w2"), &host.context())
            .unwrap_err();
        // The fake host grants kube but not docker: the node is gone by then.
        assert!(err.to_string().contains("docker"), "{err}");
        assert_eq!(
            host.kube_writes(),
            ["cordon w2 true", "evict shop/web-1", "delete w2"]
        );
    }

    #[test]
    fn without_the_write_grant_nothing_is_changed() {
        let host = FakeHost::new().kube_cluster(vec![node("w1"), node("w2")], false);
        let event =
            eventpulse_sdk::testing::alert_event("x", eventpulse_sdk::AlertStatus::Firing, &[]);
        let err = K3sNodeRemove
            .run(&event, &request("w2"), &host.context())
            .unwrap_err();
        assert!(err.to_string().contains("cordon"), "{err}");
        assert!(host.kube_writes().is_empty());
        assert_eq!(host.context().kube_list_nodes().unwrap().len(), 2);
    }
}
