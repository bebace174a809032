//! Approvals: an action that must be approved before it runs.
//!
//! An action needs approval when the rule's decision asks for it
//! ([`super::payload::APPROVAL_SIGNAL`]) or the action plugin's manifest
//! does (`[safety] require_approval`, or `approval_when` matching its
//! target, incident severity or rule). The action queue's intake then
//! records it as `awaiting_approval` instead of `pending`, with its exact
//! plugin, target and params, and tells the `[approvals] notify` notifiers,
//! with signed links to approve or reject it.
//!
//! A ruling names the params hash it approves ([`params_hash`]: plugin,
//! target and params, exactly as requested), so an approval can only ever
//! start the request that was shown. Approved, the action becomes `pending`
//! and runs as any other; rejected, or not approved within
//! `approval_timeout_secs`, it never runs and its rule hears an
//! `action.failed` with no attempts. Every step is on the incident's
//! timeline and in the audit log (capability `approval`). The waiting row
//! is never `pending`, so no restart, sweep or other instance can run it.
//!
//! Links are `GET /approvals/{id}?verdict=…&hash=…&expires=…&sig=…`, the
//! signature an HMAC-SHA256 of those values under the host's link key. The
//! GET shows the request and a form; only its POST rules (so a chat
//! client that previews links cannot approve anything). A link works once:
//! after any ruling the action no longer waits.

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::kinds::*;
use super::{
    ActionData, NotificationData, Payload, Received, derive, sleep_or_cancel, store_backoff,
};
use crate::model::{self, AuditRecord, Job, JobStatus, TimelineEntry};
use crate::registry::Registry;
use crate::runtime::manifest::Safety;
use crate::runtime::{PluginKind, types};
use crate::store::{self, Queue, Store, Tx, now_ms};
use crate::telemetry::Metrics;

/// Waits expired per transaction.
const BATCH: u32 = 256;
/// The longest the expiry sweep sleeps between looks.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Where rulings and expiries are recorded from, in events and notices.
const SOURCE: &str = "eventpulse/approvals";

/// The hash an approval names: SHA-256 over the action plugin, target and
/// params exactly as requested, hex.
pub fn params_hash(request: &types::ActionRequest) -> String {
    let mut h = Sha256::new();
    for part in [&request.action, &request.target, &request.params] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Approve or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Let it run.
    Approve,
    /// It never runs.
    Reject,
}

impl Verdict {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Reject => "reject",
        }
    }
}

/// One person's ruling on one waiting action.
#[derive(Debug, Clone)]
pub struct Ruling {
    /// Approve or reject.
    pub verdict: Verdict,
    /// The params hash the approver saw. Required to approve; checked when
    /// given to reject.
    pub params_hash: Option<String>,
    /// Who.
    pub by: String,
    /// Why (may be empty).
    pub reason: String,
    /// Through what: `api`, `cli` or `link`.
    pub via: &'static str,
}

/// Why a ruling was not taken.
#[derive(Debug, thiserror::Error)]
pub enum RulingError {
    /// No such action.
    #[error("no action `{0}`")]
    NotFound(String),
    /// It is not waiting (ruled on already, or never needed approval).
    #[error("action `{id}` is not waiting for approval: it is {status}")]
    NotWaiting {
        /// The action.
        id: String,
        /// Where it is.
        status: JobStatus,
    },
    /// Nobody ruled in time.
    #[error("the approval of action `{0}` has expired")]
    Expired(String),
    /// The hash is not the request's.
    #[error(
        "params hash does not match action `{0}`: its plugin, target or params are not the ones approved"
    )]
    WrongHash(String),
    /// An approval without a hash.
    #[error("approving needs the params hash of the request being approved")]
    NoHash,
    /// An empty `by`.
    #[error("a ruling needs who made it (`by`)")]
    Anonymous,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// A waiting action as approvers see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Waiting {
    /// The action's id.
    pub id: String,
    /// The action plugin.
    pub plugin: String,
    /// What it acts on.
    pub target: String,
    /// Its params (JSON).
    pub params: serde_json::Value,
    /// What an approval must name.
    pub params_hash: String,
    /// Why the rule asked for it.
    pub reason: String,
    /// The rule that asked.
    pub rule: String,
    /// Its incident.
    pub incident_id: Option<String>,
    /// When the wait expires (ms).
    pub expires_at: i64,
}

impl Waiting {
    /// `job`'s request as approvers see it (`None`: not an action request).
    pub fn of(job: &Job) -> Option<Waiting> {
        let data = action_data(job)?;
        Some(Waiting {
            id: job.id.clone(),
            plugin: job.plugin.clone(),
            target: job.target.clone(),
            params: serde_json::from_str(&data.request.params)
                .unwrap_or_else(|_| serde_json::Value::String(data.request.params.clone())),
            params_hash: params_hash(&data.request),
            reason: data.request.reason.clone(),
            rule: job.rule.clone(),
            incident_id: job.incident_id.clone(),
            expires_at: job.next_attempt_at,
        })
    }
}

fn action_data(job: &Job) -> Option<ActionData> {
    match Received::parse(&job.request).ok()?.payload {
        Payload::Action(d) => Some(d),
        _ => None,
    }
}

/// The host's approval settings: who is told, and how links are signed.
pub struct Approvals {
    key: SecretString,
    public_url: String,
    notify: Vec<String>,
}

impl Approvals {
    /// Links under `public_url`, signed with `key`, announced on the
    /// `notify` notifiers.
    pub fn new(key: SecretString, public_url: &str, notify: Vec<String>) -> Approvals {
        Approvals {
            key,
            public_url: public_url.trim_end_matches('/').to_owned(),
            notify,
        }
    }

    fn signature(&self, id: &str, hash: &str, verdict: Verdict, expires: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose_secret().as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(format!("{id}\n{hash}\n{}\n{expires}", verdict.as_str()).as_bytes());
        mac
    }

    /// The link that rules `verdict` on action `id` with `hash`, valid
    /// until `expires` (ms).
    pub fn link(&self, id: &str, hash: &str, verdict: Verdict, expires: i64) -> String {
        let sig = hex::encode(
            self.signature(id, hash, verdict, expires)
                .finalize()
                .into_bytes(),
        );
        format!(
            "{}/approvals/{id}?verdict={}&hash={hash}&expires={expires}&sig={sig}",
            self.public_url,
            verdict.as_str()
        )
    }

    /// Whether `sig` is this host's signature of a link (compared in
    /// constant time).
    pub fn signed(&self, id: &str, hash: &str, verdict: Verdict, expires: i64, sig: &str) -> bool {
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        self.signature(id, hash, verdict, expires)
            .verify_slice(&sig)
            .is_ok()
    }

    /// If `job` (an `action.requested` being admitted) needs approval,
    /// record it as waiting, with its timeline and audit entries and the
    /// notices to approvers, and return `true`.
    pub async fn hold(
        &self,
        registry: &Registry,
        safety: &Safety,
        tx: &mut Tx,
        received: &Received,
        job: &Job,
    ) -> Result<bool, store::Error> {
        let Payload::Action(data) = &received.payload else {
            return Ok(false);
        };
        let incident = match &job.incident_id {
            Some(id) if !data.approval && safety.approval_reads_severity() => {
                tx.incident(id).await?
            }
            _ => None,
        };
        let severity = incident.as_ref().map(|i| i.severity);
        let asked_by = if data.approval {
            format!("rule {}", data.rule)
        } else if safety.needs_approval(
            &job.target,
            severity.map_or("", model::Severity::as_str),
            &data.rule,
        ) {
            format!("the [safety] of {}", job.plugin)
        } else {
            return Ok(false);
        };
        let now = now_ms();
        let expires = now + (safety.approval_timeout_secs as i64) * 1000;
        let hash = params_hash(&data.request);
        tx.hold_for_approval(job, expires);
        let what = format!(
            "{} on {} with {} (hash {})",
            job.plugin,
            job.target,
            data.request.params,
            &hash[..12]
        );
        let cause = format!(
            "waiting for approval, asked by {asked_by}: {what}; expires {}",
            rfc3339(expires)
        );
        record(tx, job, &received.event.id, &cause, "request", true).await?;

        let approve = self.link(&job.id, &hash, Verdict::Approve, expires);
        let reject = self.link(&job.id, &hash, Verdict::Reject, expires);
        let body = format!(
            "{} asks to run {what}.\nReason: {}\nExpires: {}\n\nApprove: {approve}\nReject: {reject}\n\
             Or: eventpulse approval approve {} --hash {hash} --by <you>",
            data.rule,
            data.request.reason,
            rfc3339(expires),
            job.id
        );
        for channel in &self.notify {
            if !registry
                .get(channel)
                .is_ok_and(|p| p.kind() == PluginKind::Notifier)
            {
                continue;
            }
            let notice = NotificationData {
                rule: SOURCE.into(),
                notification_id: uuid::Uuid::now_v7().to_string(),
                request: types::NotificationRequest {
                    channel: channel.clone(),
                    severity: severity.unwrap_or(model::Severity::Warning).into(),
                    title: format!("Approval needed: {} on {}", job.plugin, job.target),
                    body: body.clone(),
                    dedup_key: Some(format!("approval:{}", job.id)),
                    fields: vec![
                        ("action_id".into(), job.id.clone()),
                        ("params_hash".into(), hash.clone()),
                    ],
                },
                delivery: None,
                error: None,
                attempts: 0,
            };
            let correlation = model::Correlation {
                action_id: None,
                ..received.event.correlation.clone()
            };
            let event = derive(
                &received.event,
                NOTIFICATION_REQUESTED,
                SOURCE,
                correlation,
                &notice,
            );
            tx.append(&event).await?;
        }
        registry.metrics().approval(&job.plugin, "requested");
        tracing::info!(plugin = %job.plugin, target = %job.target, action = %job.id, expires_at = expires, "action waits for approval");
        Ok(true)
    }
}

/// The timeline entry (when the action has an incident) and the audit
/// record of one approval step.
async fn record(
    tx: &mut Tx,
    job: &Job,
    event_id: &str,
    cause: &str,
    operation: &str,
    allowed: bool,
) -> Result<(), store::Error> {
    let now = now_ms();
    if let Some(incident) = &job.incident_id {
        let entry = TimelineEntry {
            at: now,
            kind: "approval".into(),
            from_status: None,
            to_status: None,
            cause: cause.to_owned(),
            event_id: event_id.to_owned(),
            ref_id: Some(job.id.clone()),
        };
        tx.timeline(incident, &entry).await?;
    }
    tx.audit(&AuditRecord {
        at: now,
        plugin: job.plugin.clone(),
        capability: "approval".into(),
        operation: operation.into(),
        target: job.target.clone(),
        allowed,
        detail: format!("action {}: {cause}", job.id),
    })
    .await
}

/// The `action.failed` an action that will never run announces, so its
/// rule hears (with no attempts: nothing ran).
async fn announce_never_ran(
    tx: &mut Tx,
    job: &Job,
    why: &str,
) -> Result<Option<String>, store::Error> {
    let Ok(received) = Received::parse(&job.request) else {
        return Ok(None);
    };
    let Payload::Action(mut data) = received.payload else {
        return Ok(None);
    };
    data.attempts = 0;
    data.error = Some(types::PluginError::Permanent(why.to_owned()));
    let event = &received.event;
    let failed = derive(
        event,
        ACTION_FAILED,
        SOURCE,
        event.correlation.clone(),
        &data,
    );
    tx.append(&failed).await?;
    Ok(Some(failed.id))
}

/// Take `ruling` on action `id`: approved, it becomes `pending` and runs;
/// rejected, it never does. Returns the action as it now is.
pub async fn rule(
    store: &Store,
    metrics: &Metrics,
    id: &str,
    ruling: &Ruling,
) -> Result<Job, RulingError> {
    if ruling.by.trim().is_empty() {
        return Err(RulingError::Anonymous);
    }
    let job = store
        .job(Queue::Actions, id)
        .await?
        .ok_or_else(|| RulingError::NotFound(id.to_owned()))?;
    let waiting = match (job.status, Waiting::of(&job)) {
        (JobStatus::AwaitingApproval, Some(w)) => w,
        (status, _) => {
            return Err(RulingError::NotWaiting {
                id: id.to_owned(),
                status,
            });
        }
    };
    match (&ruling.params_hash, ruling.verdict) {
        (None, Verdict::Approve) => return Err(RulingError::NoHash),
        (Some(h), _)
            if !constant_time_eq::constant_time_eq(
                h.as_bytes(),
                waiting.params_hash.as_bytes(),
            ) =>
        {
            return Err(RulingError::WrongHash(id.to_owned()));
        }
        _ => {}
    }
    let now = now_ms();
    if now >= job.next_attempt_at {
        return Err(RulingError::Expired(id.to_owned()));
    }
    let reason = if ruling.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", ruling.reason)
    };
    let (to, cause, error) = match ruling.verdict {
        Verdict::Approve => (
            JobStatus::Pending,
            format!("approved by {} via {}{reason}", ruling.by, ruling.via),
            None,
        ),
        Verdict::Reject => {
            let text = format!("rejected by {} via {}{reason}", ruling.by, ruling.via);
            (JobStatus::Rejected, text.clone(), Some(text))
        }
    };
    let mut tx = store.begin(store::Holder::Approvals).await?;
    if !tx.rule_on_approval(id, to, error.as_deref(), now).await? {
        drop(tx);
        // Someone else ruled, or it expired, since it was read.
        let status = store
            .job(Queue::Actions, id)
            .await?
            .map_or(job.status, |j| j.status);
        return Err(match status {
            JobStatus::AwaitingApproval | JobStatus::Expired => RulingError::Expired(id.to_owned()),
            status => RulingError::NotWaiting {
                id: id.to_owned(),
                status,
            },
        });
    }
    let event_id = match ruling.verdict {
        Verdict::Approve => None,
        Verdict::Reject => announce_never_ran(&mut tx, &job, &cause).await?,
    };
    let event_id = event_id.unwrap_or_else(|| format!("{SOURCE}/{}", ruling.via));
    let approved = ruling.verdict == Verdict::Approve;
    record(
        &mut tx,
        &job,
        &event_id,
        &cause,
        ruling.verdict.as_str(),
        approved,
    )
    .await?;
    tx.commit().await?;
    if approved {
        // Wake this process's action executor (others poll).
        store.requeued().notify_waiters();
    }
    metrics.approval(&job.plugin, if approved { "approved" } else { "rejected" });
    tracing::info!(action = %id, plugin = %job.plugin, target = %job.target, by = %ruling.by, via = ruling.via, verdict = ruling.verdict.as_str(), "approval ruled");
    Ok(store
        .job(Queue::Actions, id)
        .await?
        .unwrap_or(Job { status: to, ..job }))
}

/// Expire waits nobody ruled on in time, until `cancel` fires: each never
/// runs, and its rule hears an `action.failed`.
pub async fn run(store: Store, metrics: Metrics, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut wait = store_backoff();
    loop {
        let pause = match expire_due(&store, &metrics).await {
            Ok(n) if n as u32 == BATCH => Duration::ZERO,
            Ok(_) => {
                wait = store_backoff();
                match store.next_approval_expiry().await {
                    Ok(Some(at)) => {
                        Duration::from_millis((at - now_ms()).max(0) as u64).min(LOOK_EVERY)
                    }
                    _ => LOOK_EVERY,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot expire approvals yet; retrying");
                wait.next().unwrap_or(LOOK_EVERY)
            }
        };
        if sleep_or_cancel(Some(pause), &cancel).await {
            return Ok(());
        }
    }
}

/// One transaction of expiries; how many.
async fn expire_due(store: &Store, metrics: &Metrics) -> Result<usize, store::Error> {
    let mut tx = store.begin(store::Holder::Approvals).await?;
    let expired = tx.expire_approvals(now_ms(), BATCH).await?;
    let mut plugins = Vec::with_capacity(expired.len());
    for job in &expired {
        let why = "approval expired: nobody approved it in time";
        let event_id = announce_never_ran(&mut tx, job, why)
            .await?
            .unwrap_or_else(|| SOURCE.to_owned());
        record(&mut tx, job, &event_id, why, "expire", false).await?;
        plugins.push(job.plugin.clone());
    }
    tx.commit().await?;
    for plugin in &plugins {
        metrics.approval(plugin, "expired");
        tracing::warn!(plugin, "an action's approval expired; it will not run");
    }
    Ok(expired.len())
}

/// `ms` as an RFC 3339 UTC time.
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(params: &str) -> types::ActionRequest {
        types::ActionRequest {
            action: "action-docker-scale".into(),
            target: "app".into(),
            params: params.into(),
            reason: "r".into(),
        }
    }

    #[test]
    fn the_hash_binds_plugin_target_and_params() {
        let a = params_hash(&request(r#"{"replicas":2}"#));
        assert_eq!(a, params_hash(&request(r#"{"replicas":2}"#)));
        assert_ne!(a, params_hash(&request(r#"{"replicas":3}"#)));
        let mut other = request(r#"{"replicas":2}"#);
        other.target = "db".into();
        assert_ne!(a, params_hash(&other));
        // The reason is not part of what runs.
        let mut reworded = request(r#"{"replicas":2}"#);
        reworded.reason = "other".into();
        assert_eq!(a, params_hash(&reworded));
    }

    #[test]
    fn links_are_signed_per_action_hash_verdict_and_expiry() {
        let a = Approvals::new("k".to_owned().into(), "http://h:1/", vec![]);
        let link = a.link("id1", "abc", Verdict::Approve, 99);
        assert!(
            link.starts_with("http://h:1/approvals/id1?verdict=approve&hash=abc&expires=99&sig="),
            "{link}"
        );
        let sig = link.rsplit_once("sig=").unwrap().1;
        assert!(a.signed("id1", "abc", Verdict::Approve, 99, sig));
        assert!(!a.signed("id1", "abc", Verdict::Reject, 99, sig));
        assert!(!a.signed("id1", "abd", Verdict::Approve, 99, sig));
        assert!(!a.signed("id2", "abc", Verdict::Approve, 99, sig));
        assert!(!a.signed("id1", "abc", Verdict::Approve, 100, sig));
        assert!(!a.signed("id1", "abc", Verdict::Approve, 99, "zz"));
        let other = Approvals::new("k2".to_owned().into(), "http://h:1", vec![]);
        assert!(!other.signed("id1", "abc", Verdict::Approve, 99, sig));
    }
}
