//! Audit records of capability use: every container mutation a plugin made
//! or was refused. The runtime hands records to a channel; the app writes
//! them to the store (`audit_log`), where the admin API reads them.

use tokio::sync::mpsc;

pub use crate::model::AuditRecord;

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
