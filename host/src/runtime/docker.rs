//! The `docker` capability: the Docker Engine API (through bollard), scoped
//! by the plugin's [`DockerGrant`].
//!
//! A plugin sees and touches only containers carrying every label of the
//! grant's selector, creates containers only from allowlisted images, and
//! never gets privileged mode, host networking or host mounts unless the
//! grant names them. Every mutation, allowed or denied, leaves an
//! [`AuditRecord`]; a denial is also returned as `denied` so the plugin (and
//! the action record) says what was refused. An unreachable engine is
//! `unavailable`, which action plugins report as retryable.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EndpointSettings,
    HealthStatusEnum, HostConfig, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::{ClientVersion, Docker};

use super::bindings::eventpulse::plugin::{docker, types};
use super::host::HostState;
use super::manifest::DockerGrant;
use tracing::Instrument as _;

type CapResult<T> = Result<T, types::CapabilityError>;

/// The oldest Engine API this host speaks (Docker 20.10); newer engines
/// accept it.
const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// Label set on every container a plugin creates: which plugin made it.
pub const CREATED_BY: &str = "eventpulse.created-by";
/// Label set on a replica: the container it was copied from.
pub const REPLICA_OF: &str = "eventpulse.replica-of";

/// Where the Docker Engine listens (`unix:///…` or `tcp://host:port`),
/// and for TCP, the client certificates that make it TLS.
#[derive(Debug, Clone)]
pub struct DockerHost {
    /// `runtime.docker_host`.
    pub url: String,
    /// `runtime.docker_cert_path`: `ca.pem`, `cert.pem`, `key.pem`.
    pub cert_path: Option<std::path::PathBuf>,
}

impl DockerHost {
    /// A client; connecting is lazy, so a missing engine shows up as an
    /// `unavailable` error on the first call, not here.
    fn client(&self) -> CapResult<Docker> {
        let url = &self.url;
        let tcp = url.strip_prefix("tcp://").or(url.strip_prefix("http://"));
        let made = match (tcp.or(url.strip_prefix("https://")), &self.cert_path) {
            (Some(addr), Some(dir)) => Docker::connect_with_ssl(
                &format!("https://{addr}"),
                &dir.join("key.pem"),
                &dir.join("cert.pem"),
                &dir.join("ca.pem"),
                30,
                &API_VERSION,
            ),
            (Some(addr), None) => {
                Docker::connect_with_http(&format!("http://{addr}"), 30, &API_VERSION)
            }
            (None, _) => Docker::connect_with_unix(url, 30, &API_VERSION),
        };
        made.map_err(|e| unavailable(&e))
    }
}

fn unavailable(e: &dyn std::fmt::Display) -> types::CapabilityError {
    types::CapabilityError::Unavailable(format!("docker engine: {e}"))
}

/// An engine error as the plugin sees it: server-side 5xx and transport
/// failures may pass (`unavailable`); 4xx are `failed`.
/// The network aliases `source` has on `network` (a compose service's name,
/// say), which a replica must answer to as well, so that whatever finds the
/// service by name (a load balancer through Docker's DNS) finds the replica
/// too. The source's own names (its id, its hostname) are left out.
fn replica_aliases(
    source: &ContainerInspectResponse,
    network: &str,
) -> Option<(String, Vec<String>)> {
    let endpoint = source
        .network_settings
        .as_ref()?
        .networks
        .as_ref()?
        .get(network)?;
    let id = source.id.clone().unwrap_or_default();
    let hostname = source
        .config
        .as_ref()
        .and_then(|c| c.hostname.clone())
        .unwrap_or_default();
    let aliases: Vec<String> = endpoint
        .aliases
        .iter()
        .flatten()
        .filter(|a| !a.is_empty() && !id.starts_with(a.as_str()) && **a != hostname)
        .cloned()
        .collect();
    (!aliases.is_empty()).then(|| (network.to_owned(), aliases))
}

fn engine_error(e: bollard::errors::Error) -> types::CapabilityError {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError {
            status_code,
            message,
        } if status_code < 500 => {
            types::CapabilityError::Failed(format!("docker engine ({status_code}): {message}"))
        }
        other => unavailable(&other),
    }
}

fn labels_match(labels: &HashMap<String, String>, selector: &[(String, String)]) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
}

fn image_allowed(grant: &DockerGrant, image: &str) -> bool {
    grant
        .images
        .iter()
        .any(|allowed| match allowed.strip_suffix('*') {
            Some(prefix) => image.starts_with(prefix),
            None => image == allowed,
        })
}

/// Host paths the grant allows to mount: exact entries or a prefix ending in `/`.
fn mount_allowed(grant: &DockerGrant, host_path: &str) -> bool {
    grant
        .mounts
        .iter()
        .any(|m| host_path == m || (m.ends_with('/') && host_path.starts_with(m.as_str())))
}

/// What a container's config asks for that the grant may forbid.
struct Ask<'a> {
    image: &'a str,
    privileged: bool,
    network: Option<&'a str>,
    /// `host-path:container-path[:ro]`.
    binds: Vec<String>,
}

/// Whether `spec` may be created under `grant`: its labels carry the
/// grant's selector, and its image, privileges, network and mounts are
/// allowed. What `create` checks before it calls the Engine.
pub(super) fn check_spec(grant: &DockerGrant, spec: &docker::ContainerSpec) -> Result<(), String> {
    let labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
    let selector: Vec<_> = grant.selector.clone().into_iter().collect();
    if !labels_match(&labels, &selector) {
        return Err(format!(
            "a new container must carry the grant's labels {}",
            show(&selector)
        ));
    }
    check_ask(
        grant,
        &Ask {
            image: &spec.image,
            privileged: spec.privileged,
            network: spec.network.as_deref(),
            binds: spec.mounts.clone(),
        },
    )
}

fn check_ask(grant: &DockerGrant, ask: &Ask<'_>) -> Result<(), String> {
    if !image_allowed(grant, ask.image) {
        return Err(format!(
            "image `{}` is not in the grant's image allowlist",
            ask.image
        ));
    }
    if ask.privileged && !grant.privileged {
        return Err("privileged containers are not granted".into());
    }
    if matches!(ask.network, Some("host")) {
        return Err("host networking is never granted".into());
    }
    for bind in &ask.binds {
        let host_path = bind.split(':').next().unwrap_or_default();
        // Named volumes have no `/`; they are host mounts all the same.
        if !mount_allowed(grant, host_path) {
            return Err(format!(
                "mounting `{host_path}` from the host is not granted"
            ));
        }
    }
    Ok(())
}

fn state_name(inspect: &ContainerInspectResponse) -> String {
    inspect
        .state
        .as_ref()
        .and_then(|s| s.status)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

fn health_name(inspect: &ContainerInspectResponse) -> Option<String> {
    inspect
        .state
        .as_ref()
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.status)
        .filter(|s| !matches!(s, HealthStatusEnum::EMPTY | HealthStatusEnum::NONE))
        .map(|s| s.to_string())
}

impl HostState {
    /// The grant, or `not-granted` (audited).
    fn docker_grant(&mut self, operation: &str, target: &str) -> CapResult<DockerGrant> {
        match self.env.manifest.grants.docker.clone() {
            Some(g) => Ok(g),
            None => {
                self.env
                    .refuse_call("docker", operation, target, "not granted");
                Err(self.deny("docker"))
            }
        }
    }

    /// Refuse `operation` on `target` because of `why`: audited, logged,
    /// remembered for the invocation's classification.
    fn docker_denied(
        &mut self,
        operation: &str,
        target: &str,
        why: String,
    ) -> types::CapabilityError {
        self.env.refuse_call("docker", operation, target, &why);
        self.denied.get_or_insert_with(|| "docker".to_owned());
        types::CapabilityError::Denied(format!("docker {operation} {target}: {why}"))
    }

    /// Inspect `id` and check it is inside the grant's selector.
    async fn docker_owned(
        &mut self,
        operation: &str,
        id: &str,
    ) -> CapResult<(Docker, DockerGrant, ContainerInspectResponse)> {
        let grant = self.docker_grant(operation, id)?;
        let client = self.env.docker.client()?;
        let inspect = client
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(engine_error)?;
        let labels = inspect
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let selector: Vec<_> = grant.selector.clone().into_iter().collect();
        if !labels_match(&labels, &selector) {
            let name = inspect.name.clone().unwrap_or_default();
            return Err(self.docker_denied(
                operation,
                id,
                format!(
                    "container {name} is outside the grant's selector {}",
                    show(&selector)
                ),
            ));
        }
        Ok((client, grant, inspect))
    }

    /// Run a mutation on a container inside the grant, audited.
    async fn docker_mutate<F, Fut>(&mut self, operation: &str, id: String, op: F) -> CapResult<()>
    where
        F: FnOnce(Docker, String) -> Fut,
        Fut: Future<Output = Result<(), bollard::errors::Error>>,
    {
        let (client, _, _) = self.docker_owned(operation, &id).await?;
        let span = super::host::capability_span("docker", operation);
        let result = op(client, id.clone())
            .instrument(span)
            .await
            .map_err(engine_error);
        let detail = result.as_ref().err().map(|e| format!("{e:?}"));
        self.env.audit_call(
            "docker",
            operation,
            &id,
            detail.as_deref().map_or(Ok(()), Err),
        );
        result
    }

    async fn docker_create(
        &mut self,
        operation: &str,
        ask: Ask<'_>,
        grant: &DockerGrant,
        client: &Docker,
        name: Option<String>,
        body: ContainerCreateBody,
    ) -> CapResult<String> {
        let what = name.clone().unwrap_or_else(|| ask.image.to_owned());
        if let Err(why) = check_ask(grant, &ask) {
            return Err(self.docker_denied(operation, &what, why));
        }
        let options = name.map(|n| CreateContainerOptionsBuilder::default().name(&n).build());
        let created = client
            .create_container(options, body)
            .instrument(super::host::capability_span("docker", operation))
            .await
            .map_err(engine_error);
        match &created {
            Ok(r) => self.env.audit_call(
                "docker",
                operation,
                &format!("{what} → {}", short(&r.id)),
                Ok(()),
            ),
            Err(e) => self
                .env
                .audit_call("docker", operation, &what, Err(&format!("{e:?}"))),
        }
        created.map(|r| r.id)
    }
}

fn show(selector: &[(String, String)]) -> String {
    let parts: Vec<_> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(",")
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl docker::Host for HostState {
    async fn list_containers(
        &mut self,
        selector: Vec<(String, String)>,
    ) -> CapResult<Vec<docker::Container>> {
        let grant = self.docker_grant("list", &show(&selector))?;
        for (k, v) in &selector {
            if let Some(granted) = grant.selector.get(k)
                && granted != v
            {
                let why = format!("selector {k}={v} is outside the grant's {k}={granted}");
                return Err(self.docker_denied("list", &show(&selector), why));
            }
        }
        let mut all: Vec<(String, String)> = grant.selector.clone().into_iter().collect();
        all.extend(selector);
        let filters: HashMap<String, Vec<String>> = HashMap::from([(
            "label".to_owned(),
            all.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )]);
        let client = self.env.docker.client()?;
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = client
            .list_containers(Some(options))
            .await
            .map_err(engine_error)?;
        let mut out = Vec::with_capacity(summaries.len());
        for s in summaries {
            let id = s.id.unwrap_or_default();
            // Health is not in the summary on API 1.41.
            let health = match client
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
            {
                Ok(i) => health_name(&i),
                // Removed between the list and the inspect.
                Err(_) => continue,
            };
            out.push(docker::Container {
                name: s
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned(),
                image: s.image.unwrap_or_default(),
                state: s.state.map(|s| s.to_string()).unwrap_or_default(),
                health,
                labels: s.labels.unwrap_or_default().into_iter().collect(),
                created: s.created.unwrap_or_default().max(0) as u64,
                id,
            });
        }
        out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(out)
    }

    async fn create_replica(&mut self, from: String, name: Option<String>) -> CapResult<String> {
        let (client, grant, source) = self.docker_owned("create-replica", &from).await?;
        let config = source.config.clone().unwrap_or_default();
        let host = source.host_config.clone().unwrap_or_default();
        let image = config.image.clone().unwrap_or_default();
        let network = host.network_mode.clone().filter(|n| n != "default");
        let mut binds = host.binds.clone().unwrap_or_default();
        binds.extend(
            host.mounts
                .iter()
                .flatten()
                .filter_map(|m| m.source.clone()),
        );
        let ask = Ask {
            image: &image,
            privileged: host.privileged.unwrap_or(false),
            network: network.as_deref(),
            binds: binds.clone(),
        };
        let mut labels = config.labels.clone().unwrap_or_default();
        labels.insert(CREATED_BY.into(), self.env.name.clone());
        labels.insert(REPLICA_OF.into(), source.id.clone().unwrap_or_default());
        let networking_config = network
            .as_ref()
            .and_then(|n| replica_aliases(&source, n))
            .map(|(network, aliases)| NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network,
                    EndpointSettings {
                        aliases: Some(aliases),
                        ..Default::default()
                    },
                )])),
            });
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            env: config.env.clone(),
            cmd: config.cmd.clone(),
            entrypoint: config.entrypoint.clone(),
            labels: Some(labels),
            networking_config,
            host_config: Some(HostConfig {
                network_mode: network.clone(),
                binds: (!binds.is_empty()).then_some(binds.clone()),
                restart_policy: host.restart_policy.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.docker_create("create-replica", ask, &grant, &client, name, body)
            .await
    }

    async fn create(&mut self, spec: docker::ContainerSpec) -> CapResult<String> {
        let grant = self.docker_grant("create", &spec.image)?;
        let what = spec.name.clone().unwrap_or_else(|| spec.image.clone());
        let labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
        let selector: Vec<_> = grant.selector.clone().into_iter().collect();
        if !labels_match(&labels, &selector) {
            let why = format!(
                "a new container must carry the grant's labels {}",
                show(&selector)
            );
            return Err(self.docker_denied("create", &what, why));
        }
        let client = self.env.docker.client()?;
        let ask = Ask {
            image: &spec.image,
            privileged: spec.privileged,
            network: spec.network.as_deref(),
            binds: spec.mounts.clone(),
        };
        let mut labels = labels;
        labels.insert(CREATED_BY.into(), self.env.name.clone());
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(spec.env.clone()),
            cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: spec.network.clone(),
                privileged: Some(spec.privileged),
                binds: (!spec.mounts.is_empty()).then(|| spec.mounts.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.docker_create("create", ask, &grant, &client, spec.name.clone(), body)
            .await
    }

    async fn start(&mut self, id: String) -> CapResult<()> {
        self.docker_mutate("start", id, |c, id| async move {
            c.start_container(
                &id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
        })
        .await
    }

    async fn stop(&mut self, id: String, timeout_ms: u32) -> CapResult<()> {
        let t = timeout_ms.div_ceil(1000) as i32;
        self.docker_mutate("stop", id, |c, id| async move {
            let o = StopContainerOptionsBuilder::default().t(t).build();
            c.stop_container(&id, Some(o)).await
        })
        .await
    }

    async fn restart(&mut self, id: String, timeout_ms: u32) -> CapResult<()> {
        let t = timeout_ms.div_ceil(1000) as i32;
        self.docker_mutate("restart", id, |c, id| async move {
            let o = RestartContainerOptionsBuilder::default().t(t).build();
            c.restart_container(&id, Some(o)).await
        })
        .await
    }

    async fn remove(&mut self, id: String) -> CapResult<()> {
        self.docker_mutate("remove", id, |c, id| async move {
            let o = RemoveContainerOptionsBuilder::default().force(true).build();
            c.remove_container(&id, Some(o)).await
        })
        .await
    }

    async fn wait_healthy(&mut self, id: String, timeout_ms: u32) -> CapResult<bool> {
        let (client, _, _) = self.docker_owned("wait-healthy", &id).await?;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms.into());
        loop {
            let inspect = client
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
                .map_err(engine_error)?;
            let status = inspect.state.as_ref().and_then(|s| s.status);
            match (status, health_name(&inspect).as_deref()) {
                (Some(ContainerStateStatusEnum::RUNNING), Some("healthy") | None) => {
                    return Ok(true);
                }
                // Stopped for good: it will not become healthy by waiting.
                (Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD), _) => {
                    return Ok(false);
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn inspect(&mut self, id: String) -> CapResult<String> {
        let (_, _, inspect) = self.docker_owned("inspect", &id).await?;
        let mut value = serde_json::to_value(&inspect).unwrap_or_default();
        value["State"]["Status"] = serde_json::Value::String(state_name(&inspect));
        Ok(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_answers_to_the_service_alias_not_to_the_source_names() {
        // As compose creates a service's container: the service's name and
        // the container's short id as aliases on the project network.
        let source: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "5d8f044e2756aa11",
            "Config": {"Hostname": "5d8f044e2756"},
            "NetworkSettings": {"Networks": {"demo_default": {"Aliases": ["app", "5d8f044e2756"]}}},
        }))
        .unwrap();
        assert_eq!(
            replica_aliases(&source, "demo_default"),
            Some(("demo_default".to_owned(), vec!["app".to_owned()]))
        );
        assert_eq!(replica_aliases(&source, "other"), None);
    }

    fn grant() -> DockerGrant {
        DockerGrant {
            selector: [("service".to_owned(), "app".to_owned())].into(),
            images: vec!["eventpulse-demo-app:*".into()],
            privileged: false,
            mounts: vec!["/srv/data/".into()],
        }
    }

    #[test]
    fn asks_outside_the_grant_are_refused_with_the_reason() {
        let g = grant();
        let ok = Ask {
            image: "eventpulse-demo-app:latest",
            privileged: false,
            network: Some("bridge"),
            binds: vec!["/srv/data/x:/data".into()],
        };
        assert_eq!(check_ask(&g, &ok), Ok(()));
        let cases = [
            (
                Ask {
                    image: "busybox",
                    ..ok_clone(&ok)
                },
                "allowlist",
            ),
            (
                Ask {
                    privileged: true,
                    ..ok_clone(&ok)
                },
                "privileged",
            ),
            (
                Ask {
                    network: Some("host"),
                    ..ok_clone(&ok)
                },
                "host networking",
            ),
            (
                Ask {
                    binds: vec!["/etc:/etc:ro".into()],
                    ..ok_clone(&ok)
                },
                "`/etc`",
            ),
            (
                Ask {
                    binds: vec!["/srv/database:/d".into()],
                    ..ok_clone(&ok)
                },
                "/srv/database",
            ),
        ];
        for (ask, why) in cases {
            let err = check_ask(&g, &ask).unwrap_err();
            assert!(err.contains(why), "{err} should mention {why}");
        }
    }

    fn ok_clone<'a>(a: &Ask<'a>) -> Ask<'a> {
        Ask {
            image: a.image,
            privileged: a.privileged,
            network: a.network,
            binds: a.binds.clone(),
        }
    }

    #[test]
    fn selector_must_match_every_label() {
        let labels = HashMap::from([
            ("service".to_owned(), "app".to_owned()),
            ("tier".to_owned(), "web".to_owned()),
        ]);
        assert!(labels_match(&labels, &[("service".into(), "app".into())]));
        assert!(!labels_match(&labels, &[("service".into(), "db".into())]));
        assert!(!labels_match(&labels, &[("zone".into(), "a".into())]));
    }
}
