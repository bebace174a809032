//! `action-k3s-node-add`: add k3s worker nodes as containers and wait until
//! the Kubernetes API reports them `Ready`.
//!
//! Params: `add` (workers to add, default 1). Config: `image`, `server_url`
//! (the k3s server the agent joins), `pool` (label `k3s.pool`, default
//! `workers`), `node_prefix` (default `k3s-worker`), `network`,
//! `privileged` (default `true`: a real agent needs it), `ready_timeout_ms`
//! (default 20 000). Secret `join_token`: the cluster's join token, passed
//! to the agent as `K3S_TOKEN` and never logged or reported.
//!
//! Node names derive from the action id (`<prefix>-<id>-<i>`), so running
//! the same action again, or after a crash, finds the workers it already
//! made (starting any that are stopped) instead of adding more.

use eventpulse_sdk::{
    Action, ActionRequest, ActionResult, ContainerSpec, Context, Error, Event, Labels,
};

/// The action.
#[derive(Default)]
pub struct K3sNodeAdd;

/// Pause between readiness polls.
const POLL_MS: u64 = 250;

struct Settings {
    image: String,
    server_url: String,
    pool: String,
    prefix: String,
    network: Option<String>,
    privileged: bool,
    ready_ms: u64,
}

impl Settings {
    fn load(cx: &Context<'_>) -> Result<Settings, Error> {
        let need = |k: &str| {
            cx.config(k)
                .ok_or_else(|| Error::permanent(format!("config `{k}` is required")))
        };
        Ok(Settings {
            image: need("image")?,
            server_url: need("server_url")?,
            pool: cx.config("pool").unwrap_or_else(|| "workers".into()),
            prefix: cx
                .config("node_prefix")
                .unwrap_or_else(|| "k3s-worker".into()),
            network: cx.config("network").filter(|n| !n.is_empty()),
            privileged: cx.config("privileged").is_none_or(|v| v == "true"),
            ready_ms: match cx.config("ready_timeout_ms") {
                None => 20_000,
                Some(v) => v.parse().map_err(|_| {
                    Error::permanent(format!("config `ready_timeout_ms`: `{v}` is not a number"))
                })?,
            },
        })
    }
}

/// Node names for this action: stable across re-runs of the same action.
pub fn node_names(prefix: &str, action_id: &str, add: usize) -> Vec<String> {
    let id: String = action_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    let tail = &id[id.len().saturating_sub(8)..];
    (0..add).map(|i| format!("{prefix}-{tail}-{i}")).collect()
}

impl Action for K3sNodeAdd {
    fn description(&self) -> String {
        "adds k3s workers as containers and waits until they are Ready".into()
    }

    fn run(
        &self,
        event: &Event,
        request: &ActionRequest,
        cx: &Context<'_>,
    ) -> Result<ActionResult, Error> {
        let s = Settings::load(cx)?;
        let add = request
            .params
            .get("add")
            .and_then(|v| v.as_u64())
            .unwrap_or(1) as usize;
        if add == 0 || add > 10 {
            return Err(Error::permanent("params: `add` must be between 1 and 10"));
        }
        let token = cx
            .secret("join_token")
            .ok_or_else(|| Error::permanent("secret `join_token` is not configured"))?;
        let action_id = event
            .correlation
            .action_id
            .clone()
            .unwrap_or_else(|| event.id.clone());
        let names = node_names(&s.prefix, &action_id, add);
        let before = cx.kube_list_nodes()?;
        let ready_before = before.iter().filter(|n| n.ready).count();

        let pool = Labels(vec![("k3s.pool".into(), s.pool.clone())]);
        let existing = cx.docker_list_containers(&pool)?;
        for name in &names {
            let id = match existing.iter().find(|c| &c.name == name) {
                // Made by an earlier run of this action.
                Some(c) if c.state == "running" => continue,
                Some(c) => c.id.clone(),
                None => cx.docker_create(&ContainerSpec {
                    name: Some(name.clone()),
                    image: s.image.clone(),
                    env: vec![
                        format!("K3S_URL={}", s.server_url),
                        format!("K3S_TOKEN={token}"),
                        format!("K3S_NODE_NAME={name}"),
                    ],
                    labels: Labels(vec![
                        ("k3s.pool".into(), s.pool.clone()),
                        ("k3s.node".into(), name.clone()),
                    ]),
                    cmd: vec![],
                    network: s.network.clone(),
                    privileged: s.privileged,
                    mounts: vec![],
                })?,
            };
            cx.docker_start(&id)?;
        }

        // Ready means the API server says so, not that the container runs.
        let mut waited = 0;
        loop {
            let nodes = cx.kube_list_nodes()?;
            let pending: Vec<&String> = names
                .iter()
                .filter(|n| !nodes.iter().any(|node| &node.name == *n && node.ready))
                .collect();
            if pending.is_empty() {
                let ready_after = nodes.iter().filter(|n| n.ready).count();
                return Ok(ActionResult {
                    summary: format!(
                        "added {add} k3s worker(s) to pool {}: {ready_before} → {ready_after} Ready nodes",
                        s.pool
                    ),
                    details: serde_json::json!({
                        "pool": s.pool,
                        "nodes": names,
                        "previous_ready": ready_before,
                        "ready": ready_after,
                        "waited_ms": waited,
                    }),
                });
            }
            if waited >= s.ready_ms {
                // Left running: the next attempt of this action finds them
                // by name and waits again, rather than adding more.
                return Err(Error::retryable(format!(
                    "node(s) {} not Ready within {} ms",
                    pending
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    s.ready_ms
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(POLL_MS));
            waited += POLL_MS;
        }
    }
}

eventpulse_sdk::export_action!(K3sNodeAdd);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_stable_per_action() {
        let a = node_names("k3s-worker", "01a20b89-4b24-76ad-846f-1cf390ac301e", 2);
        assert_eq!(a, vec!["k3s-worker-90ac301e-0", "k3s-worker-90ac301e-1"]);
        assert_eq!(
            a,
            node_names("k3s-worker", "01a20b89-4b24-76ad-846f-1cf390ac301e", 2)
        );
        assert_ne!(
            a,
            node_names("k3s-worker", "01a20b89-4b24-76ad-846f-1cf390ac3999", 2)
        );
    }
}
