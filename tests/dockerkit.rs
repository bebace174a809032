//! Helpers for tests on the real Docker Engine: the demo images (built
//! offline by `compose/build-images.sh`), a throwaway service of demo-app
//! containers, and counts read through the Engine API (bollard), never from
//! a plugin's own report.

use std::collections::HashMap;
use std::process::Command;
use std::sync::OnceLock;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HealthStatusEnum, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
};

/// The demo images, built once per test binary.
pub fn images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = super::workspace().join("compose/build-images.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .expect("running build-images.sh");
        assert!(
            out.status.success(),
            "build-images.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The Engine API client tests check with.
pub fn docker() -> Docker {
    Docker::connect_with_unix_defaults()
        .expect("docker socket")
        .with_timeout(std::time::Duration::from_secs(60))
}

/// Containers carrying `label` (`key=value`); stopped ones too if `all`.
pub async fn labelled(
    label: &str,
    all: bool,
) -> Result<Vec<bollard::models::ContainerSummary>, bollard::errors::Error> {
    let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
    docker()
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(all)
                .filters(&filters)
                .build(),
        ))
        .await
}

/// A service: containers labelled `service=<name>`. Every container with the
/// label is removed when this is dropped, whoever made it.
pub struct Service {
    /// The `service` label value (unique per test).
    pub name: String,
}

impl Service {
    /// Start one container of `image` for a new service named `prefix-<random>`,
    /// with Traefik labels like a real deployment. Health checks are disabled
    /// with `no_healthcheck` (a container that counts as ready when running).
    pub async fn start(prefix: &str, image: &str, no_healthcheck: bool) -> Service {
        images();
        let name = format!("{prefix}-{:08x}", rand_u32());
        let service = Service { name: name.clone() };
        let labels = HashMap::from([
            ("service".to_owned(), name.clone()),
            ("eventpulse.test".to_owned(), "1".to_owned()),
            ("traefik.enable".to_owned(), "true".to_owned()),
            (
                format!("traefik.http.routers.{name}.rule"),
                format!("Host(`{name}.localhost`)"),
            ),
            (
                format!("traefik.http.services.{name}.loadbalancer.server.port"),
                "8080".to_owned(),
            ),
        ]);
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            labels: Some(labels),
            env: Some(vec![format!("SERVICE={name}")]),
            healthcheck: no_healthcheck.then(|| bollard::models::HealthConfig {
                test: Some(vec!["NONE".into()]),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                network_mode: Some("bridge".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        create_started(&format!("{name}-0"), body).await;
        service
    }

    /// `(running, healthy)` containers of this service, from the Engine API.
    /// A container without a health check counts as healthy when running.
    pub async fn counts(&self) -> (usize, usize) {
        let list = self.containers().await;
        let running = list.iter().filter(|c| c.1 == "running").count();
        let healthy = list
            .iter()
            .filter(|c| c.1 == "running" && matches!(c.2.as_deref(), None | Some("healthy")))
            .count();
        (running, healthy)
    }

    /// Every container of the service: `(id, state, health)`, any state.
    pub async fn containers(&self) -> Vec<(String, String, Option<String>)> {
        let d = docker();
        let list = labelled(&format!("service={}", self.name), true)
            .await
            .unwrap();
        let mut out = Vec::new();
        for c in list {
            let id = c.id.unwrap_or_default();
            let Ok(i) = d
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
            else {
                continue;
            };
            let state = i.state.unwrap_or_default();
            let health = state
                .health
                .and_then(|h| h.status)
                .filter(|s| !matches!(s, HealthStatusEnum::EMPTY | HealthStatusEnum::NONE))
                .map(|s| s.to_string());
            out.push((
                id,
                state.status.map(|s| s.to_string()).unwrap_or_default(),
                health,
            ));
        }
        out
    }

    /// The grant a plugin acting on this service gets.
    pub fn grant(&self) -> String {
        format!(
            "[grants.docker]\nselector = {{ service = \"{}\" }}\nimages = [\"eventpulse-demo-app:*\"]\n",
            self.name
        )
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        remove_labelled(&format!("service={}", self.name));
    }
}

/// Remove every container carrying `label` (`key=value`).
pub fn remove_labelled(label: &str) {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
        .expect("docker ps");
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .arg("rm")
            .arg("-f")
            .args(&ids)
            .output();
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

/// Removes every container carrying a label when dropped.
pub struct Labelled(pub String);

impl Drop for Labelled {
    fn drop(&mut self) {
        remove_labelled(&self.0);
    }
}

/// Create and start a container of `image` named `name` with `labels`.
pub async fn run(name: &str, image: &str, labels: &[(&str, &str)]) -> String {
    images();
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    create_started(name, body).await
}

async fn create_started(name: &str, body: ContainerCreateBody) -> String {
    let d = docker();
    let options = CreateContainerOptionsBuilder::default().name(name).build();
    let id = d.create_container(Some(options), body).await.unwrap().id;
    d.start_container(
        &id,
        None::<bollard::query_parameters::StartContainerOptions>,
    )
    .await
    .unwrap();
    id
}

/// A random suffix for names that must not collide between test runs.
pub fn unique() -> String {
    format!("{:08x}", rand_u32())
}

/// A TLS front for the Docker Engine, which listens on its unix socket
/// only here and cannot be given a TLS listener: rustls presenting
/// `server`, requiring a client certificate signed by `client_ca`, each
/// connection forwarded to `/var/run/docker.sock`.
pub async fn docker_tls_front(
    server: &super::pki::Issued,
    client_ca: &std::path::Path,
) -> super::pki::TlsFront {
    super::pki::TlsFront::start(
        server,
        Some(client_ca),
        super::pki::Backend::Unix("/var/run/docker.sock".into()),
    )
    .await
}
