//! Cost of one rule invocation, side by side in one run:
//!
//! - native: the cpu-autoscale rule called as plain Rust (the floor);
//! - sandbox: the same rule as a component, fresh `Store` + instance per
//!   event, pooling allocator, every [`Tuning`] on (what the host does);
//! - the same with each lever switched off in turn, so what it is worth
//!   stays visible: the guest built the old way (every capability
//!   imported), the guest on std's allocator instead of the SDK's arena,
//!   the guest optimised for size, the WASI context built per `Store`, no copy-on-write memory
//!   image, pooled memory handed back to the kernel instead of kept
//!   resident; and the sandbox as it was before these levers (every
//!   import, std's allocator, opt-level "s", WASI per store);
//! - sandbox, no pooling: wasmtime's on-demand allocator;
//! - subprocess: a process spawned per event running the rule natively,
//!   the way StackStorm runs actions;
//! - Python: the first-party Python rule (`plugins/python/rule-disk-full`,
//!   CPython inside the component, built by componentize-py) on a DiskFull
//!   alert (opens an incident, one notification, one state write), a fresh
//!   instance per event like the Rust rows; with its component's size and
//!   the time its first load takes to compile it (no cache).
//!
//! Each sandbox case runs on one task and on two (this machine has two
//! cores). `cargo bench -p eventpulse-tests --bench invoke` prints a table.
//! `BENCH_N` sets the calls per case (default 20,000); `BENCH_ONLY=<case>`
//! runs one sandbox case alone on one task (for profilers and callgrind:
//! `default`, `every-import`, `system-alloc`, `opt-size`, `eager-wasi`, `no-cow`, `no-keep-resident`,
//! `before`, `no-pooling`, `python`). Under valgrind also set `BENCH_INSTANCES=4`:
//! valgrind cannot reserve the address space of the default pool.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventpulse::config::RuntimeConfig;
use eventpulse::model::{self, AlertStatus};
use eventpulse::registry::Registry;
use eventpulse::runtime::{Clock, Plugin, Runtime, RuntimeOptions, Tuning};
use eventpulse::store::Store;
use eventpulse_sdk::Rule;
use eventpulse_sdk::testing::FakeHost;
use eventpulse_tests::{alert_event, component, workspace};

struct Row {
    name: String,
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

/// One sandbox configuration to measure.
struct Case {
    key: &'static str,
    name: &'static str,
    options: RuntimeOptions,
    component: PathBuf,
}

/// Rounds each sandbox case's calls are split into (see `main`).
const ROUNDS: usize = 10;

/// `calls` decisions on `tasks` concurrent tasks: every call's latency, and
/// the wall time of the whole round.
async fn round(
    plugin: &Arc<Plugin>,
    event: &model::Event,
    calls: usize,
    tasks: usize,
) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (plugin, event) = (plugin.clone(), event.clone());
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(calls / tasks);
                for _ in 0..calls / tasks {
                    let t = Instant::now();
                    std::hint::black_box(plugin.decide(&event).await.unwrap());
                    samples.push(t.elapsed());
                }
                samples
            })
        })
        .collect();
    let mut all = Vec::with_capacity(calls);
    for h in handles {
        all.extend(h.await.unwrap());
    }
    (all, start.elapsed())
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

/// rule-cpu-autoscale built another way, in a target directory of its own:
/// `every-import` (the SDK's `bench-every-import` feature: calls go through
/// a `dyn Host` vtable, so the component imports every capability, HTTP,
/// Docker, Kubernetes and SMTP, as SDK 0.1.0 built it), `system-alloc`
/// (std's allocator instead of the SDK's arena), `opt-size` (the `plugin`
/// profile at `opt-level = "s"`, as it was) or `before` (all three).
fn variant(key: &str) -> PathBuf {
    let root = workspace();
    let target = root.join("target/plugins/bench").join(key);
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args(["build", "--quiet", "--target", "wasm32-wasip2"])
        .args(["--profile", "plugin", "-p", "rule-cpu-autoscale"]);
    let (features, opt_level) = match key {
        "every-import" => ("eventpulse-sdk/bench-every-import", "3"),
        "system-alloc" => ("eventpulse-sdk/system-allocator", "3"),
        "opt-size" => ("", "s"),
        "before" => (
            "eventpulse-sdk/bench-every-import,eventpulse-sdk/system-allocator",
            "s",
        ),
        _ => unreachable!("no variant {key}"),
    };
    if !features.is_empty() {
        cargo.args(["--features", features]);
    }
    cargo.env("CARGO_PROFILE_PLUGIN_OPT_LEVEL", opt_level);
    let status = cargo
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("running cargo");
    assert!(status.success(), "building the {key} variant failed");
    target.join("wasm32-wasip2/plugin/rule_cpu_autoscale.wasm")
}

async fn registry(dir: &Path, case: &Case) -> Arc<Registry> {
    registry_with(
        dir,
        case,
        "[limits]\nfuel = 10_000_000\ntimeout_ms = 1_000\n",
    )
    .await
}

async fn registry_with(dir: &Path, case: &Case, manifest: &str) -> Arc<Registry> {
    let runtime = Arc::new(Runtime::new(&dir.join("cache"), &case.options).unwrap());
    let store = Store::connect(&format!("sqlite://{}", dir.join("bench.db").display()))
        .await
        .unwrap();
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(&case.component, plugins.join("cpu.wasm")).unwrap();
    std::fs::write(plugins.join("cpu.toml"), manifest).unwrap();
    let registry = Arc::new(Registry::new(
        runtime,
        store,
        &plugins,
        Clock::manual(1_000_000),
        case.options.limits.clone(),
    ));
    registry.reload().await.unwrap();
    if let Some(status) = registry.status("cpu").filter(|s| s.error.is_some()) {
        panic!(
            "{} did not load: {:?}",
            case.component.display(),
            status.error
        );
    }
    registry
}

fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
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

    let lean = component("rule-cpu-autoscale");
    let mut limits = RuntimeConfig::default();
    if let Some(slots) = std::env::var("BENCH_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        limits.max_instances = slots;
    }
    let default = RuntimeOptions::new(limits);
    let off = |tuning: Tuning| RuntimeOptions {
        tuning,
        ..default.clone()
    };
    let on = Tuning::default();
    let mut cases = vec![
        Case {
            key: "default",
            name: "sandbox, fresh instance (default)",
            options: default.clone(),
            component: lean.clone(),
        },
        Case {
            key: "every-import",
            name: "  guest imports every capability",
            options: default.clone(),
            component: PathBuf::new(),
        },
        Case {
            key: "system-alloc",
            name: "  guest on std's allocator, not the arena",
            options: default.clone(),
            component: PathBuf::new(),
        },
        Case {
            key: "opt-size",
            name: "  guest optimised for size",
            options: default.clone(),
            component: PathBuf::new(),
        },
        Case {
            key: "eager-wasi",
            name: "  WASI context built per store",
            options: off(Tuning {
                lazy_wasi: false,
                ..on
            }),
            component: lean.clone(),
        },
        Case {
            key: "no-cow",
            name: "  no copy-on-write memory image",
            options: off(Tuning {
                memory_cow: false,
                ..on
            }),
            component: lean.clone(),
        },
        Case {
            key: "no-keep-resident",
            name: "  pooled memory not kept resident",
            options: off(Tuning {
                keep_resident: false,
                ..on
            }),
            component: lean.clone(),
        },
        Case {
            key: "before",
            name: "  as before: every import, std allocator, opt s, WASI per store",
            options: off(Tuning {
                lazy_wasi: false,
                memory_cow: true,
                keep_resident: true,
            }),
            component: PathBuf::new(),
        },
        Case {
            key: "no-pooling",
            name: "sandbox, no pooling",
            options: RuntimeOptions {
                pooling: false,
                ..default.clone()
            },
            component: lean.clone(),
        },
    ];
    cases.retain(|c| only.as_deref().is_none_or(|o| o == c.key));
    for case in &mut cases {
        if case.component.as_os_str().is_empty() {
            case.component = variant(case.key);
        }
    }

    let mut rows = Vec::new();
    if only.is_none() {
        let host = FakeHost::new().at(1_000_000);
        let (samples, wall) = time(n * 10, || {
            let d = rule_cpu_autoscale::CpuAutoscale
                .decide(&sdk_event, &host.context())
                .unwrap();
            std::hint::black_box(d);
        });
        rows.push(Row {
            name: "native Rust call".into(),
            samples,
            wall,
            concurrency: 1,
        });
    }

    // Every case stays loaded, and the cases take turns in short rounds,
    // so a noisy neighbour on this shared machine slows them all alike
    // rather than whichever case happened to run at the time.
    let plugins: Vec<_> = cases
        .iter()
        .map(|case| {
            let registry = rt.block_on(registry(&dir.path().join(case.key), case));
            let plugin = registry.get("cpu").unwrap();
            // Warm up, and check it really decides.
            let d = rt.block_on(plugin.decide(&event)).unwrap().output;
            assert_eq!(d.actions.len(), 1);
            (registry, plugin)
        })
        .collect();
    for tasks in [1usize, 2] {
        if tasks == 2 && only.is_some() {
            continue;
        }
        let mut results: Vec<(Vec<Duration>, Duration)> = vec![Default::default(); cases.len()];
        for _ in 0..ROUNDS {
            for ((_, plugin), (samples, wall)) in plugins.iter().zip(&mut results) {
                let (s, w) = rt.block_on(round(plugin, &event, n / ROUNDS, tasks));
                samples.extend(s);
                *wall += w;
            }
        }
        for (case, (samples, wall)) in cases.iter().zip(results) {
            rows.push(Row {
                name: case.name.to_string(),
                samples,
                wall,
                concurrency: tasks,
            });
        }
    }
    drop(plugins);

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
            name: "subprocess per event".into(),
            samples,
            wall,
            concurrency: 1,
        });
    }

    let mut python_note = None;
    if only.as_deref().is_none_or(|o| o == "python") {
        let wasm = eventpulse_tests::python_component("plugins/python/rule-disk-full");
        let size = std::fs::metadata(&wasm).unwrap().len();
        let case = Case {
            key: "python",
            name: "Python rule (rule-disk-full), fresh instance",
            options: default.clone(),
            component: wasm,
        };
        let manifest =
            std::fs::read_to_string(workspace().join("plugins/python/rule-disk-full/plugin.toml"))
                .unwrap();
        let started = Instant::now();
        let registry = rt.block_on(registry_with(&dir.path().join("python"), &case, &manifest));
        let compile = started.elapsed();
        let plugin = registry.get("cpu").unwrap();
        let disk = alert_event("DiskFull", AlertStatus::Firing, &[("service", "db")]);
        let d = rt.block_on(plugin.decide(&disk)).unwrap().output;
        assert!(d.incident.is_some() && d.notifications.len() == 1);
        let calls = (n / 20).max(100);
        for tasks in [1usize, 2] {
            if tasks == 2 && only.is_some() {
                continue;
            }
            let (samples, wall) = rt.block_on(round(&plugin, &disk, calls, tasks));
            rows.push(Row {
                name: case.name.to_string(),
                samples,
                wall,
                concurrency: tasks,
            });
        }
        python_note = Some(format!(
            "Python component: {:.1} MiB; first load (compile, no cache) {:.1} s",
            size as f64 / (1024.0 * 1024.0),
            compile.as_secs_f64()
        ));
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
    if let Some(note) = python_note {
        println!("\n{note}");
    }
}
