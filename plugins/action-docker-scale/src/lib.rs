//! `action-docker-scale`: converge a Docker service to exactly N healthy
//! replicas.
//!
//! The service's containers are those labelled `service_label=<target>`
//! (default label `service`), within the manifest's docker grant. Params:
//! `replicas` (or `ensure_replicas`): the count to converge to, at least 1.
//!
//! - Too few running: copy the oldest running container (image, env,
//!   labels incl. Traefik's, network) as new replicas, start them and wait
//!   until they are healthy (`ready_timeout_ms`, default 20 000). A replica
//!   that does not become healthy fails the action permanently, and every
//!   replica this run created is removed again.
//! - Too many: remove the newest first.
//! - Leftovers of an earlier, interrupted run (replicas not running) are
//!   removed first, and replicas still starting are waited for, so running
//!   the same action again, or after a crash, converges to the same N
//!   without duplicates.
//!
//! Reports `previous`, `replicas`, `created`, `removed` and `duration_ms`.

use eventpulse_sdk::{
    Action, ActionRequest, ActionResult, Container, Context, Error, Event, Labels,
};

/// Label the host puts on replicas: the container a replica was copied from.
const REPLICA_OF: &str = "eventpulse.replica-of";

/// The action.
#[derive(Default)]
pub struct DockerScale;

/// What to do to reach the wanted count.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// Replicas left over by an interrupted run (not running): remove.
    pub zombies: Vec<String>,
    /// Running containers now.
    pub running: usize,
    /// Container to copy for each missing replica.
    pub template: Option<String>,
    /// How many replicas to create.
    pub create: usize,
    /// Running containers to remove, newest first.
    pub remove: Vec<String>,
    /// Running containers whose health check is still starting: wait for them.
    pub starting: Vec<String>,
}

/// The plan that takes `containers` (oldest first) to `wanted` running.
pub fn plan(containers: &[Container], wanted: usize) -> Plan {
    let is_replica = |c: &Container| c.labels.get(REPLICA_OF).is_some();
    let zombies = containers
        .iter()
        .filter(|c| c.state != "running" && is_replica(c))
        .map(|c| c.id.clone())
        .collect();
    let mut running: Vec<&Container> = containers.iter().filter(|c| c.state == "running").collect();
    running.sort_by_key(|c| (c.created, c.id.clone()));
    let remove: Vec<String> = running
        .iter()
        .rev()
        .take(running.len().saturating_sub(wanted))
        .map(|c| c.id.clone())
        .collect();
    let starting = running
        .iter()
        .filter(|c| !remove.contains(&c.id) && c.health.as_deref() == Some("starting"))
        .map(|c| c.id.clone())
        .collect();
    Plan {
        zombies,
        running: running.len(),
        template: running.first().map(|c| c.id.clone()),
        create: wanted.saturating_sub(running.len()),
        remove,
        starting,
    }
}

fn wanted(request: &ActionRequest) -> Result<usize, Error> {
    let n = request
        .params
        .get("replicas")
        .or_else(|| request.params.get("ensure_replicas"))
        .and_then(|v| v.as_u64())
        .ok_or_else(|| Error::permanent("params: `replicas` (a whole number) is required"))?;
    if n == 0 {
        return Err(Error::permanent(
            "params: `replicas` must be at least 1 (scaling to zero is not this action's job)",
        ));
    }
    Ok(n as usize)
}

impl Action for DockerScale {
    fn description(&self) -> String {
        "converges a Docker service to exactly N healthy replicas".into()
    }

    fn run(
        &self,
        _event: &Event,
        request: &ActionRequest,
        cx: &Context<'_>,
    ) -> Result<ActionResult, Error> {
        let started = cx.now();
        let n = wanted(request)?;
        let label = cx
            .config("service_label")
            .unwrap_or_else(|| "service".into());
        let ready_ms: u32 = match cx.config("ready_timeout_ms") {
            None => 20_000,
            Some(v) => v.parse().map_err(|_| {
                Error::permanent(format!("config `ready_timeout_ms`: `{v}` is not a number"))
            })?,
        };
        let service = &request.target;
        let selector = Labels(vec![(label, service.clone())]);
        let containers = cx.docker_list_containers(&selector)?;
        let plan = plan(&containers, n);

        for id in &plan.zombies {
            cx.info(&format!(
                "removing replica {} left by an interrupted run",
                short(id)
            ));
            cx.docker_remove(id)?;
        }
        let Some(template) = &plan.template else {
            return Err(Error::permanent(format!(
                "service {service} has no running container to copy"
            )));
        };

        let mut created = Vec::new();
        for _ in 0..plan.create {
            let id = cx.docker_create_replica(template, None)?;
            created.push(id.clone());
            if let Err(e) = cx.docker_start(&id) {
                cleanup(cx, &created);
                return Err(e.into());
            }
        }
        for id in created.iter().chain(&plan.starting) {
            match cx.docker_wait_healthy(id, ready_ms) {
                Ok(true) => {}
                Ok(false) => {
                    let mut zombies = created.clone();
                    if plan.starting.contains(id) {
                        zombies.push(id.clone());
                    }
                    cleanup(cx, &zombies);
                    return Err(Error::permanent(format!(
                        "replica {} of {service} did not become healthy within {ready_ms} ms; removed {} new replica(s)",
                        short(id),
                        zombies.len()
                    )));
                }
                Err(e) => {
                    cleanup(cx, &created);
                    return Err(e.into());
                }
            }
        }
        for id in &plan.remove {
            cx.docker_remove(id)?;
        }

        let duration_ms = cx.now().saturating_sub(started);
        Ok(ActionResult {
            summary: format!(
                "{service}: {} → {n} replicas in {duration_ms} ms",
                plan.running
            ),
            details: serde_json::json!({
                "service": service,
                "previous": plan.running,
                "replicas": n,
                "created": created,
                "removed": plan.remove,
                "zombies_removed": plan.zombies,
                "duration_ms": duration_ms,
            }),
        })
    }
}

/// Remove what this run created; errors are logged, the first error wins.
fn cleanup(cx: &Context<'_>, ids: &[String]) {
    for id in ids {
        if let Err(e) = cx.docker_remove(id) {
            cx.warn(&format!("could not remove replica {}: {e}", short(id)));
        }
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

eventpulse_sdk::export_action!(DockerScale);

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, created: u64, state: &str, health: Option<&str>, replica: bool) -> Container {
        let mut labels = vec![("service".to_owned(), "app".to_owned())];
        if replica {
            labels.push((REPLICA_OF.to_owned(), "orig".to_owned()));
        }
        Container {
            id: id.into(),
            name: id.into(),
            image: "eventpulse-demo-app:latest".into(),
            state: state.into(),
            health: health.map(str::to_owned),
            labels: Labels(labels),
            created,
        }
    }

    #[test]
    fn scale_out_copies_the_oldest_running_container() {
        let p = plan(
            &[
                c("b", 2, "running", Some("healthy"), false),
                c("a", 1, "running", None, false),
            ],
            4,
        );
        assert_eq!(p.template.as_deref(), Some("a"));
        assert_eq!((p.running, p.create), (2, 2));
        assert!(p.remove.is_empty() && p.zombies.is_empty());
    }

    #[test]
    fn scale_in_removes_the_newest_first() {
        let cs = [
            c("a", 1, "running", None, false),
            c("b", 2, "running", None, true),
            c("c", 3, "running", None, true),
        ];
        let p = plan(&cs, 1);
        assert_eq!(p.remove, vec!["c".to_owned(), "b".to_owned()]);
        assert_eq!(p.create, 0);
    }

    #[test]
    fn an_interrupted_run_converges_without_duplicates() {
        // Crashed after creating one replica (never started) and starting
        // another (still starting): the first is removed, the second waited
        // for, nothing new is created.
        let cs = [
            c("a", 1, "running", Some("healthy"), false),
            c("z", 2, "created", None, true),
            c("s", 3, "running", Some("starting"), true),
        ];
        let p = plan(&cs, 2);
        assert_eq!(p.zombies, vec!["z".to_owned()]);
        assert_eq!(p.create, 0);
        assert_eq!(p.starting, vec!["s".to_owned()]);
        // Stopped originals are not ours to remove.
        let p = plan(
            &[
                c("a", 1, "running", None, false),
                c("o", 0, "exited", None, false),
            ],
            1,
        );
        assert!(p.zombies.is_empty());
    }

    #[test]
    fn replicas_param_is_required_and_positive() {
        let r = ActionRequest::new("action-docker-scale", "app");
        assert!(wanted(&r).unwrap_err().to_string().contains("required"));
        assert!(
            wanted(&r.clone().param("replicas", 0))
                .unwrap_err()
                .to_string()
                .contains("at least 1")
        );
        assert_eq!(wanted(&r.clone().param("ensure_replicas", 3)).unwrap(), 3);
    }
}
