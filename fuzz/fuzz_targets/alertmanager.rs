//! Fuzzes the Alertmanager webhook parser and normaliser
//! (`host/src/ingest/alertmanager.rs`, compiled here as is) with arbitrary
//! bytes. It must never panic; whatever it accepts must normalise into
//! events that hold the invariants ingest relies on.
//!
//! The parser is pure and only names `crate::runtime::types`; this crate
//! supplies plain stand-ins for those generated types, so the fuzz build
//! does not compile (and instrument) wasmtime.

#![no_main]

mod runtime {
    pub mod types {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub enum AlertStatus {
            Firing,
            Resolved,
        }
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub enum Severity {
            Info,
            Warning,
            Error,
            Critical,
        }
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        pub struct Alert {
            pub fingerprint: String,
            pub name: String,
            pub status: AlertStatus,
            pub severity: Option<Severity>,
            pub labels: Vec<(String, String)>,
            pub annotations: Vec<(String, String)>,
            pub starts_at: u64,
            pub ends_at: Option<u64>,
            pub generator_url: Option<String>,
        }
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        pub struct Correlation {
            pub alert_id: Option<String>,
            pub incident_id: Option<String>,
            pub action_id: Option<String>,
        }
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        pub struct Event {
            pub id: String,
            pub kind: String,
            pub source: String,
            pub time: u64,
            pub trace_id: String,
            pub key: String,
            pub correlation: Correlation,
            pub labels: Vec<(String, String)>,
            pub annotations: Vec<(String, String)>,
            pub alert: Option<Alert>,
            pub data: String,
        }
    }
}

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
