//! The host's domain model: events and their kinds, alerts, incidents and
//! their lifecycle, work-queue jobs, plugin state writes and audit
//! records. Plain data with the rules that belong to it (which status may
//! follow which, which kinds exist); no I/O, no storage, no wasmtime. The
//! store persists these types, the pipeline moves them, the API shows them,
//! and the runtime converts events to and from the plugin contract's
//! generated types at its edge (`runtime/conversions.rs`), so a change to
//! the WIT contract does not reach persistence or the API.
//!
//! It compiles on its own (serde only), which is what lets the fuzz target
//! build the real ingest parser.

mod event;
mod incident;
mod job;
mod silence;

pub use event::{Alert, AlertStatus, Correlation, Event, EventKind, Severity, UnknownKind};
pub use incident::{Incident, IncidentStatus, TimelineEntry};
pub use job::{Job, JobStatus};
pub use silence::{Silence, SilenceMode, Weekly};

/// A state write from one successful plugin invocation: `None` deletes the
/// key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateWrite {
    /// The key.
    pub key: String,
    /// The new value and its expiry (ms since epoch), or `None` to delete.
    pub value: Option<(String, Option<u64>)>,
}

/// A timer one rule invocation set (`Some((due at ms, data))`, replacing
/// any pending one with the key) or cancelled (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerWrite {
    /// The rule's own key.
    pub key: String,
    /// When it fires (ms, host clock) and what it carries; `None` cancels.
    pub set: Option<(i64, String)>,
}

/// One capability call worth keeping.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Milliseconds since the epoch (host clock).
    pub at: i64,
    /// The plugin that made the call.
    pub plugin: String,
    /// `docker`, `kube`, ...
    pub capability: String,
    /// `create`, `remove`, ...
    pub operation: String,
    /// The container, image or selector it was about.
    pub target: String,
    /// Whether the call was allowed.
    pub allowed: bool,
    /// Why it was refused or failed; empty when it went through.
    pub detail: String,
}

/// One Kubernetes Warning event, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeWarning {
    /// The cluster it came from.
    pub cluster: String,
    /// Involved object kind (`Pod`, `Node`, ...).
    pub kind: String,
    /// Involved object namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// Involved object name.
    pub name: String,
    /// `OOMKilled`, `BackOff`, ...
    pub reason: String,
    /// Kubernetes' message.
    pub message: String,
    /// Kubernetes' own count (1 when absent).
    pub count: i64,
    /// firstTimestamp, ms since the epoch.
    pub first_seen: i64,
    /// lastTimestamp, ms since the epoch.
    pub last_seen: i64,
    /// `md5(cluster + kind + namespace + name + reason)`, hex.
    pub dedup_key: String,
    /// The event's identity: key, object uid, count and last timestamp.
    pub event_id: String,
}
