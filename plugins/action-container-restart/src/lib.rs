//! `action-container-restart`: restart a service's unhealthy containers
//! (or the ones named in `params.containers`) and wait until they are
//! healthy again.
//!
//! The service's containers are those labelled `service_label=<target>`
//! (default `service`) within the docker grant. Without names, the
//! containers whose health check reports `unhealthy`, or that have exited,
//! are restarted; healthy ones are left alone, so running the action again
//! is harmless. Config: `ready_timeout_ms` (default 20 000),
//! `stop_timeout_ms` (default 5 000).

use eventpulse_sdk::{
    Action, ActionRequest, ActionResult, Container, Context, Error, Event, Labels,
};

/// The action.
#[derive(Default)]
pub struct ContainerRestart;

/// The containers to restart: those named (by name or id prefix), else
/// the unhealthy or exited ones.
pub fn pick<'a>(containers: &'a [Container], named: &[String]) -> Vec<&'a Container> {
    if named.is_empty() {
        return containers
            .iter()
            .filter(|c| c.health.as_deref() == Some("unhealthy") || c.state == "exited")
            .collect();
    }
    containers
        .iter()
        .filter(|c| {
            named
                .iter()
                .any(|n| &c.name == n || (n.len() >= 12 && c.id.starts_with(n.as_str())))
        })
        .collect()
}

fn number(cx: &Context<'_>, key: &str, default: u32) -> Result<u32, Error> {
    cx.config(key).map_or(Ok(default), |v| {
        v.parse()
            .map_err(|_| Error::permanent(format!("config `{key}`: `{v}` is not a number")))
    })
}

impl Action for ContainerRestart {
    fn description(&self) -> String {
        "restarts a service's unhealthy (or named) containers and waits for health".into()
    }

    fn run(
        &self,
        _event: &Event,
        request: &ActionRequest,
        cx: &Context<'_>,
    ) -> Result<ActionResult, Error> {
        let label = cx
            .config("service_label")
            .unwrap_or_else(|| "service".into());
        let ready_ms = number(cx, "ready_timeout_ms", 20_000)?;
        let stop_ms = number(cx, "stop_timeout_ms", 5_000)?;
        let named: Vec<String> = request.params["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let service = &request.target;
        let containers = cx.docker_list_containers(&Labels(vec![(label, service.clone())]))?;
        let chosen = pick(&containers, &named);
        if !named.is_empty() && chosen.len() != named.len() {
            return Err(Error::permanent(format!(
                "service {service} has {} of the {} named containers",
                chosen.len(),
                named.len()
            )));
        }
        let mut restarted = Vec::new();
        for c in &chosen {
            cx.docker_restart(&c.id, stop_ms)?;
            restarted.push(c.name.clone());
        }
        for c in &chosen {
            if !cx.docker_wait_healthy(&c.id, ready_ms)? {
                return Err(Error::retryable(format!(
                    "{} of {service} not healthy within {ready_ms} ms after restart",
                    c.name
                )));
            }
        }
        Ok(ActionResult {
            summary: format!("{service}: restarted {} container(s)", restarted.len()),
            details: serde_json::json!({ "service": service, "restarted": restarted }),
        })
    }
}

eventpulse_sdk::export_action!(ContainerRestart);

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, state: &str, health: Option<&str>) -> Container {
        Container {
            id: format!("{name:0<64}"),
            name: name.into(),
            image: "img".into(),
            state: state.into(),
            health: health.map(str::to_owned),
            labels: Labels::default(),
            created: 0,
        }
    }

    #[test]
    fn picks_unhealthy_and_exited_unless_named() {
        let cs = [
            c("a", "running", Some("healthy")),
            c("b", "running", Some("unhealthy")),
            c("d", "exited", None),
        ];
        let names: Vec<&str> = pick(&cs, &[]).iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["b", "d"]);
        let named = pick(&cs, &["a".to_owned()]);
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].name, "a");
    }
}
