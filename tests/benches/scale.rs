//! Alert received → new replica healthy, next to the bare container start
//! it is built on, on the real Docker Engine, in one run:
//!
//! - `bare`: create + start a demo-app container through the Engine API and
//!   poll until its health check reports healthy;
//! - `pipeline`: post a HighCPU webhook for a one-container service to an
//!   embedded host running `rule-cpu-autoscale` and `action-docker-scale`,
//!   and poll the Engine until the service has 2 healthy containers.
//!
//! Both wait for the same image health check (1 s interval), so the gap
//! between the rows is what EventPulse adds. `BENCH_RUNS` (default 5) runs
//! each. `cargo bench -p eventpulse-tests --bench scale` prints a table.

use std::time::{Duration, Instant};

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, InspectContainerOptions};
use eventpulse::ingest::alertmanager::sample;
use eventpulse_tests::dockerkit::{Labelled, Service, docker, unique};
use eventpulse_tests::{Host, post_webhook};

async fn healthy(id: &str) -> bool {
    let i = docker()
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .unwrap();
    i.state
        .and_then(|s| s.health)
        .and_then(|h| h.status)
        .is_some_and(|s| s.to_string() == "healthy")
}

async fn bare() -> Duration {
    let label = format!("eventpulse.bench={}", unique());
    let _cleanup = Labelled(label.clone());
    let (k, v) = label.split_once('=').unwrap();
    let body = ContainerCreateBody {
        image: Some("eventpulse-demo-app:latest".into()),
        labels: Some([(k.to_owned(), v.to_owned())].into()),
        ..Default::default()
    };
    let d = docker();
    let t = Instant::now();
    let name = format!("bench-{v}");
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    let id = d.create_container(Some(options), body).await.unwrap().id;
    d.start_container(
        &id,
        None::<bollard::query_parameters::StartContainerOptions>,
    )
    .await
    .unwrap();
    while !healthy(&id).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.elapsed()
}

async fn pipeline() -> Duration {
    let svc = Service::start("bench", "eventpulse-demo-app:latest", false).await;
    while svc.counts().await != (1, 1) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let host = Host::start().await;
    host.install(
        "rule-cpu-autoscale",
        "rule-cpu-autoscale",
        "[config]\naction = \"action-docker-scale\"\nchannels = \"notifier-log\"\ncooldown_secs = \"0\"\n",
    );
    host.install("notifier-log", "notifier-log", "");
    host.install_now(
        "action-docker-scale",
        "action-docker-scale",
        &format!(
            "[limits]\ntimeout_ms = 28000\nfuel = 200_000_000\n\n{}",
            svc.grant()
        ),
    )
    .await;
    let alert = sample(
        "HighCPU",
        &[("service", &svc.name)],
        false,
        "2026-11-24T10:00:00Z",
        "",
    );
    let t = Instant::now();
    let (status, _) = post_webhook(&host.url, &alert).await;
    assert_eq!(status, 200);
    while svc.counts().await != (2, 2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t.elapsed();
    host.stop().await;
    took
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    eventpulse_tests::dockerkit::images();
    eventpulse_tests::components();
    let mut rows = Vec::new();
    let (mut b, mut p) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        b.push(bare().await);
        p.push(pipeline().await);
    }
    rows.push(("bare container start → healthy", stats(b)));
    rows.push(("alert received → new replica healthy", stats(p)));
    println!("\n{runs} runs each, interleaved; demo-app image, health check interval 1 s\n");
    println!("| measurement | min | p50 | max |");
    println!("|---|---|---|---|");
    for (what, (min, p50, max)) in rows {
        println!(
            "| {what} | {:.0} ms | {:.0} ms | {:.0} ms |",
            ms(min),
            ms(p50),
            ms(max)
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
