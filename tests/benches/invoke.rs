//! Cost of one rule invocation, side by side in one run:
//!
//! - native: the cpu-autoscale rule called as plain Rust (the floor);
//! - sandbox: the same rule as a component, fresh `Store` + instance per
//!   event, pooling allocator (what the host does);
//! - sandbox, no pooling: the same with wasmtime's on-demand allocator;
//! - subprocess: a process spawned per event running the rule natively,
//!   the way StackStorm runs actions.
//!
//! `cargo bench -p eventpulse-tests --bench invoke` prints a table.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventpulse::config::RuntimeConfig;
use eventpulse::registry::Registry;
use eventpulse::runtime::{Clock, Runtime, RuntimeOptions, types::AlertStatus};
use eventpulse::store::Store;
use eventpulse_sdk::Rule;
use eventpulse_sdk::testing::FakeHost;
use eventpulse_tests::{alert_event, component};

struct Row {
    name: &'static str,
    samples: Vec<Duration>,
    wall: Duration,
    concurrency: usize,
}

impl Row {
    fn pct(&self, p: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        s[((s.len() as f64 * p) as usize).min(s.len() - 1)]
    }
}

fn time<F: FnMut()>(n: usize, mut f: F) -> (Vec<Duration>, Duration) {
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    (samples, start.elapsed())
}

async fn registry(dir: &std::path::Path, pooling: bool) -> Arc<Registry> {
    let limits = RuntimeConfig::default();
    let runtime = Arc::new(
        Runtime::new(
            &dir.join("cache"),
            &RuntimeOptions {
                limits: limits.clone(),
                pooling,
            },
        )
        .unwrap(),
    );
    let store = Store::connect(&format!("sqlite://{}", dir.join("bench.db").display()))
        .await
        .unwrap();
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(component("rule-cpu-autoscale"), plugins.join("cpu.wasm")).unwrap();
    std::fs::write(
        plugins.join("cpu.toml"),
        "[limits]\nfuel = 10_000_000\ntimeout_ms = 1_000\n",
    )
    .unwrap();
    let registry = Arc::new(Registry::new(
        runtime,
        store,
        &plugins,
        Clock::manual(1_000_000),
        limits,
    ));
    registry.reload().await.unwrap();
    registry
}

fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    // `BENCH_ONLY=pooling` runs just the pooled sandbox (for profiling).
    let only = std::env::var("BENCH_ONLY").ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let event = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);
    let sdk_event = eventpulse_sdk::testing::alert_event(
        "HighCPU",
        eventpulse_sdk::AlertStatus::Firing,
        &[("service", "app"), ("severity", "critical")],
    );

    let mut rows = Vec::new();

    let host = FakeHost::new().at(1_000_000);
    let (samples, wall) = time(n * 10, || {
        let d = rule_cpu_autoscale::CpuAutoscale
            .decide(&sdk_event, &host.context())
            .unwrap();
        std::hint::black_box(d);
    });
    rows.push(Row {
        name: "native Rust call",
        samples,
        wall,
        concurrency: 1,
    });

    for (pooling, name, name2) in [
        (
            true,
            "sandbox, fresh instance (pooling)",
            "sandbox, pooling, 2 tasks",
        ),
        (
            false,
            "sandbox, fresh instance (no pooling)",
            "sandbox, no pooling, 2 tasks",
        ),
    ] {
        if only.as_deref().is_some_and(|o| o != "pooling" || !pooling) {
            continue;
        }
        let sub = dir.path().join(if pooling { "pool" } else { "ondemand" });
        let registry = rt.block_on(registry(&sub, pooling));
        let plugin = registry.get("cpu").unwrap();
        // Warm up, and check it really decides.
        let d = rt.block_on(plugin.decide(&event)).unwrap().output;
        assert_eq!(d.actions.len(), 1);
        let (samples, wall) = rt.block_on(async {
            let mut samples = Vec::with_capacity(n);
            let start = Instant::now();
            for _ in 0..n {
                let t = Instant::now();
                std::hint::black_box(plugin.decide(&event).await.unwrap());
                samples.push(t.elapsed());
            }
            (samples, start.elapsed())
        });
        rows.push(Row {
            name,
            samples,
            wall,
            concurrency: 1,
        });

        let (samples, wall) = rt.block_on(async {
            let start = Instant::now();
            let tasks: Vec<_> = (0..2)
                .map(|_| {
                    let (plugin, event) = (plugin.clone(), event.clone());
                    tokio::spawn(async move {
                        let mut samples = Vec::with_capacity(n / 2);
                        for _ in 0..n / 2 {
                            let t = Instant::now();
                            std::hint::black_box(plugin.decide(&event).await.unwrap());
                            samples.push(t.elapsed());
                        }
                        samples
                    })
                })
                .collect();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            (all, start.elapsed())
        });
        rows.push(Row {
            name: name2,
            samples,
            wall,
            concurrency: 2,
        });
    }

    let payload = serde_json::to_vec(&sdk_event).unwrap();
    let exe = env!("CARGO_BIN_EXE_cpu-rule-subprocess");
    let subprocess_runs = if only.is_some() { 0 } else { (n / 40).max(50) };
    let (samples, wall) = time(subprocess_runs, || {
        let mut child = Command::new(exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&payload).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success() && out.stdout.starts_with(b"{"));
    });
    if !samples.is_empty() {
        rows.push(Row {
            name: "subprocess per event",
            samples,
            wall,
            concurrency: 1,
        });
    }

    println!(
        "\nrule invocation: rule-cpu-autoscale, HighCPU firing (opens incident, 1 action, 1 notification)\n"
    );
    println!("| case | calls | tasks | p50 | p99 | throughput |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.1} µs | {:.1} µs | {:.0}/s |",
            r.name,
            r.samples.len(),
            r.concurrency,
            r.pct(0.50).as_secs_f64() * 1e6,
            r.pct(0.99).as_secs_f64() * 1e6,
            r.samples.len() as f64 / r.wall.as_secs_f64(),
        );
    }
}
