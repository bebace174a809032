//! Audit records of capability use: every container mutation a plugin made
//! or was refused. The runtime hands records to a channel; the app writes
//! them to the store (`audit_log`), where the admin API reads them.

use tokio::sync::mpsc;

/// One capability call worth keeping.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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

/// Where records go. Cloning shares the channel.
#[derive(Debug, Clone)]
pub struct Audit(Option<mpsc::UnboundedSender<AuditRecord>>);

impl Audit {
    /// A sink and the receiving end the app drains.
    pub fn channel() -> (Audit, mpsc::UnboundedReceiver<AuditRecord>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Audit(Some(tx)), rx)
    }

    /// A sink that only logs (benchmarks, unit tests).
    pub fn log_only() -> Audit {
        Audit(None)
    }

    /// Record `r`; also logged under the `audit` target (a refusal at warn).
    pub fn record(&self, r: AuditRecord) {
        macro_rules! log {
            ($level:ident) => {
                tracing::$level!(
                    target: "audit",
                    plugin = %r.plugin,
                    capability = %r.capability,
                    operation = %r.operation,
                    target_name = %r.target,
                    allowed = r.allowed,
                    detail = %r.detail,
                    "capability call"
                )
            };
        }
        if r.allowed {
            log!(info)
        } else {
            log!(warn)
        }
        if let Some(tx) = &self.0 {
            let _ = tx.send(r);
        }
    }
}
