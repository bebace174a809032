//! Hostile plugins (`tests/fixtures/rule-hostile`) in the real sandbox: each
//! misbehaviour fails only its own invocation, with its typed error, is
//! recorded, and a healthy plugin answers right after; repeated failures
//! trip the circuit breaker, which the admin API can reset.

use std::time::{Duration, Instant};

use eventpulse::model::AlertStatus;
use eventpulse::registry;
use eventpulse::runtime::Error;
use eventpulse_tests::{Captured, Host, alert_event, hostile_manifest};

mod plugin_run;
mod python;

const CPU: &str = "[limits]\ntimeout_ms = 500\n";

async fn decide(host: &Host, name: &str) -> Result<(), Error> {
    let event = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);
    match host.registry.decide(name, &event).await {
        Ok(_) => Ok(()),
        Err(registry::Error::Plugin(e)) => Err(e),
        Err(other) => panic!("unexpected registry error: {other}"),
    }
}

/// Install `mode` as plugin `name`, check it fails with `expected`, and that
/// the healthy rule still answers.
async fn contained(
    host: &Host,
    name: &str,
    mode: &str,
    limits: &str,
    expected: impl Fn(&Error) -> bool,
) -> Error {
    host.install_now(name, "rule-hostile", &hostile_manifest(mode, limits))
        .await;
    let err = decide(host, name)
        .await
        .expect_err("hostile call must fail");
    assert!(expected(&err), "{mode}: unexpected error {err:?}");
    decide(host, "cpu")
        .await
        .unwrap_or_else(|e| panic!("healthy rule after {mode}: {e}"));
    err
}

async fn host() -> Host {
    let host = Host::start().await;
    host.install_now("cpu", "rule-cpu-autoscale", CPU).await;
    host
}

#[tokio::test]
async fn infinite_loop_is_stopped_by_fuel() {
    let host = host().await;
    let err = contained(
        &host,
        "spin-fuel",
        "loop",
        "fuel = 2_000_000\ntimeout_ms = 10_000",
        |e| matches!(e, Error::OutOfFuel(2_000_000)),
    )
    .await;
    assert_eq!(err.to_string(), "plugin ran out of fuel (2000000 units)");
}

#[tokio::test]
async fn infinite_loop_is_stopped_by_the_deadline() {
    let host = host().await;
    let start = Instant::now();
    contained(
        &host,
        "spin-time",
        "loop",
        "fuel = 1_000_000_000_000_000\ntimeout_ms = 50",
        |e| matches!(e, Error::Timeout(50)),
    )
    .await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "stopped promptly: {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn unbounded_memory_growth_hits_the_limit() {
    let host = host().await;
    // A deadline far past what growing to 16 MiB takes, so that on a
    // loaded machine (CI runs test binaries side by side on two cores) the
    // memory limit is still what stops it.
    let limits = "memory_mb = 16\ntimeout_ms = 30_000";
    contained(&host, "hoarder", "grow", limits, |e| {
        matches!(e, Error::Memory(16))
    })
    .await;
}

#[tokio::test]
async fn stack_overflow_is_a_trap() {
    // Rust keeps its stack in linear memory: overflowing it runs off the
    // bottom of memory, which wasm reports as an out-of-bounds access.
    let host = host().await;
    contained(&host, "deep", "recurse", "", |e| {
        matches!(e, Error::Trap(m) if m.contains("out of bounds memory access") || m.contains("call stack exhausted"))
    })
    .await;
}

#[tokio::test]
async fn panic_is_a_trap_with_the_message() {
    let host = host().await;
    contained(
        &host,
        "panicky",
        "panic",
        "",
        |e| matches!(e, Error::Trap(m) if m.contains("hostile plugin panicked on purpose")),
    )
    .await;
}

#[tokio::test]
async fn contract_violating_output_is_refused() {
    let host = host().await;
    contained(
        &host,
        "liar",
        "invalid",
        "",
        |e| matches!(e, Error::InvalidOutput(m) if m == "actions[0].action is empty"),
    )
    .await;
}

#[tokio::test]
async fn ungranted_capability_is_denied() {
    let host = host().await;
    contained(
        &host,
        "snoop",
        "ungranted",
        "",
        |e| matches!(e, Error::Denied(c) if c == "docker"),
    )
    .await;
}

/// One worker thread shared by a spinning guest and healthy calls: the
/// guest yields every epoch tick, so the healthy calls are served meanwhile
/// instead of waiting for the spinning call's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_spinning_plugin_does_not_stall_healthy_ones() {
    let host = host().await;
    let manifest = hostile_manifest("loop", "fuel = 1_000_000_000_000_000\ntimeout_ms = 3_000");
    host.install_now("spin", "rule-hostile", &manifest).await;
    let event = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);

    let registry = host.registry.clone();
    let e = event.clone();
    let spinning = tokio::spawn(async move { registry.decide("spin", &e).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let registry = host.registry.clone();
    let healthy = tokio::spawn(async move {
        let start = Instant::now();
        for _ in 0..20 {
            registry.decide("cpu", &event).await.unwrap();
        }
        start.elapsed()
    });
    let elapsed = healthy.await.unwrap();
    // Had the spinner held the only worker, the healthy calls could only
    // have run after its 3 s deadline.
    assert!(
        !spinning.is_finished(),
        "20 healthy calls finished ({elapsed:?}) while the spinning call was still running"
    );
    let err = spinning.await.unwrap().unwrap_err();
    assert!(
        matches!(err, registry::Error::Plugin(Error::Timeout(3_000))),
        "{err}"
    );
}

#[tokio::test]
async fn repeated_failures_trip_the_breaker_which_admin_can_reset() {
    let host = host().await;
    host.install_now("panicky", "rule-hostile", &hostile_manifest("panic", ""))
        .await;

    for _ in 0..3 {
        assert!(matches!(
            decide(&host, "panicky").await,
            Err(Error::Trap(_))
        ));
    }
    assert_eq!(
        decide(&host, "panicky").await,
        Err(Error::CircuitOpen("panicky".into()))
    );
    decide(&host, "cpu")
        .await
        .expect("other plugins are unaffected");

    let body = host.get_json("/api/v1/plugins/panicky").await;
    assert_eq!(body["plugin"]["breaker"], "open");
    let failures = body["recent_failures"].as_array().unwrap();
    assert_eq!(
        failures.len(),
        3,
        "each sandbox failure is recorded: {body}"
    );
    assert!(
        failures
            .iter()
            .all(|f| f["kind"] == "trap" && f["operation"] == "decide")
    );

    let reset = host
        .post("/api/v1/plugins/panicky/breaker/reset")
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    let body: serde_json::Value = reset.json().await.unwrap();
    assert_eq!(body["plugin"]["breaker"], "closed");
    assert!(
        matches!(decide(&host, "panicky").await, Err(Error::Trap(_))),
        "invoked again after reset"
    );
}

#[tokio::test]
async fn state_is_kept_only_from_successful_real_runs() {
    let host = host().await;
    host.install_now("counter", "rule-hostile", &hostile_manifest("state", ""))
        .await;
    let event = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);
    let note = |d: eventpulse::runtime::types::Decision| d.note.unwrap();
    assert_eq!(
        note(host.registry.decide("counter", &event).await.unwrap()),
        "count=1"
    );
    assert_eq!(
        note(host.registry.decide("counter", &event).await.unwrap()),
        "count=2"
    );

    // The same plugin, now writing state and then trapping: the write is lost.
    host.install_now(
        "counter",
        "rule-hostile",
        &hostile_manifest("state-panic", ""),
    )
    .await;
    assert!(matches!(
        decide(&host, "counter").await,
        Err(Error::Trap(_))
    ));
    host.install_now("counter", "rule-hostile", &hostile_manifest("state", ""))
        .await;
    assert_eq!(
        note(host.registry.dry_run("counter", &event).await.unwrap()),
        "count=3"
    );
    assert_eq!(
        note(host.registry.decide("counter", &event).await.unwrap()),
        "count=3",
        "dry run kept nothing"
    );
}

#[tokio::test]
async fn a_plugin_cannot_leak_its_secret_into_logs_errors_or_the_api() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let host = host().await;
    let secret = "s3cr3t-t0ken-value";
    let file = host.dir.path().join("token");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let manifest = format!(
        "[config]\nmode = \"leak\"\n\n[secrets]\ntoken = {{ file = {:?} }}\n",
        file.display().to_string()
    );
    host.install_now("leaky", "rule-hostile", &manifest).await;

    let err = decide(&host, "leaky").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin error (permanent): failed with token [redacted]"
    );

    let event = alert_event("HighCPU", AlertStatus::Firing, &[("service", "app")]);
    let dry = host
        .post("/api/v1/plugins/leaky/dry-run")
        .json(&event)
        .send()
        .await
        .unwrap();
    let dry = dry.text().await.unwrap();
    let status = host.get_text("/api/v1/plugins/leaky").await;
    let list = host.get_text("/api/v1/plugins").await;
    let logged = logs.text();

    assert!(
        logged.contains("my token is [redacted]"),
        "the plugin's log line is kept, redacted: {logged}"
    );
    for (place, text) in [
        ("logs", &logged),
        ("dry-run", &dry),
        ("status", &status),
        ("list", &list),
    ] {
        assert!(!text.contains(secret), "secret leaked into {place}: {text}");
    }
}
