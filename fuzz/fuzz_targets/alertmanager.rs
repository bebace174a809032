//! Fuzzes the Alertmanager webhook parser and normaliser
//! (`host/src/ingest/alertmanager.rs`, compiled here as is) with arbitrary
//! bytes. It must never panic; whatever it accepts must normalise into
//! events that hold the invariants ingest relies on.
//!
//! The parser is pure and names only `crate::model`, the host's domain
//! model, which has no I/O and no wasmtime: both are compiled here from
//! the host's own sources, so the fuzz build does not compile (and
//! instrument) the rest of the host.

#![no_main]

#[path = "../../host/src/model/mod.rs"]
#[allow(dead_code, unused_imports)]
mod model;

#[path = "../../host/src/ingest/alertmanager.rs"]
#[allow(dead_code)]
mod alertmanager;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(n) = alertmanager::parse(data) else {
        return;
    };
    for a in &n.alerts {
        assert!(!a.fingerprint.is_empty(), "accepted an alert without fingerprint");
        assert!(!a.name.is_empty(), "accepted an alert without alertname");
        assert!(a.starts_at > 0, "accepted the zero time as startsAt");
        let e = alertmanager::alert_raised(&n, a, 1);
        assert_eq!(e.kind, "alert.raised");
        assert_eq!(e.trace_id.len(), 32);
        assert!(!e.key.is_empty());
        assert_eq!(
            e.correlation.alert_id.as_deref(),
            Some(format!("{}:{}", a.fingerprint, a.starts_at).as_str())
        );
        // What is stored must serialise.
        serde_json::to_string(&e).expect("event serialises");
        serde_json::from_str::<serde_json::Value>(&e.data).expect("data is JSON");
    }
});
