//! The rule stage: every enabled rule subscribed to an `alert.raised` event
//! decides; the outcome of an action goes back to the rule that asked for
//! it. What the rules decided is applied in one transaction with the inbox
//! row: decisions log, plugin state, incident changes and the events they
//! announce.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::Instrument;

use super::incidents::{IncidentData, transition};
use super::kinds::*;
use super::payload::{
    APPROVAL_SIGNAL, ApprovalAsk, VERIFY_SIGNAL, VERIFY_TIMER, VerifyAsk, VerifyData,
};
use super::silences::{Active, Effect};
use super::{
    ActionData, NotificationData, Payload, Received, SignalData, Stage, TimerData, derive,
};
use crate::model;
use crate::model::{
    EventKind, Incident, IncidentStatus, Severity, Silence, StateWrite, TimelineEntry,
};
use crate::registry::Registry;
use crate::runtime::{self, Invocation, Plugin, StateOverlay, types};
use crate::store::{self, DecisionRecord, Store, Tx, now_ms};

/// The rule stage.
pub struct RuleStage {
    store: Store,
    registry: Arc<Registry>,
    attempts: u32,
    /// Other instances share the rules' state (the transport is not
    /// embedded): re-read it before each batch.
    shared_state: bool,
}

/// One rule's answer to one event.
struct Call {
    rule: String,
    plugin: Option<Arc<Plugin>>,
    result: Result<Invocation<types::Decision>, runtime::Error>,
    attempts: u32,
}

/// Uncommitted state writes of one lane, per rule.
type Overlays = HashMap<String, Arc<StateOverlay>>;

impl RuleStage {
    /// A stage invoking rules from `registry`, each up to `attempts` times
    /// when it fails retryably.
    pub fn new(store: Store, registry: Arc<Registry>, attempts: u32, shared_state: bool) -> Self {
        RuleStage {
            store,
            registry,
            attempts: attempts.max(1),
            shared_state,
        }
    }

    /// The rules' answers to each of `events`, in the same order. Events
    /// with the same key form a lane, decided in log order, each seeing the
    /// state its lane's earlier decisions wrote; lanes run at once across
    /// the cores, as partitions do on Kafka. (Each invocation still gets
    /// its own fresh sandbox.)
    /// Each answer comes with the span its event was decided in, which
    /// its effects are recorded in too.
    async fn decide_all(&self, events: &[&Received]) -> Vec<(Vec<Call>, tracing::Span)> {
        if events.len() == 1 {
            let lane = decide_lane(&self.registry, self.attempts, vec![(0, events[0].clone())]);
            return lane
                .await
                .into_iter()
                .map(|(_, calls, span)| (calls, span))
                .collect();
        }
        let mut lanes: Vec<Vec<(usize, Received)>> = Vec::new();
        let mut lane_of: HashMap<&str, usize> = HashMap::new();
        for (i, event) in events.iter().enumerate() {
            let lane = *lane_of.entry(event.event.key.as_str()).or_insert_with(|| {
                lanes.push(Vec::new());
                lanes.len() - 1
            });
            lanes[lane].push((i, (*event).clone()));
        }
        let mut running = JoinSet::new();
        for lane in lanes {
            let (registry, attempts) = (self.registry.clone(), self.attempts);
            running.spawn(async move { decide_lane(&registry, attempts, lane).await });
        }
        let mut answers: Vec<Option<(Vec<Call>, tracing::Span)>> =
            (0..events.len()).map(|_| None).collect();
        while let Some(lane) = running.join_next().await {
            let lane = lane.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            for (i, calls, span) in lane {
                answers[i] = Some((calls, span));
            }
        }
        answers
            .into_iter()
            .map(|a| a.expect("every event was decided"))
            .collect()
    }

    /// A firing alert a silence keeps from every rule: counted, and noted
    /// on the incident its series belongs to, if any.
    async fn record_silenced(
        &self,
        tx: &mut Tx,
        event: &model::Event,
        silence: &Silence,
    ) -> Result<(), store::Error> {
        tracing::info!(event.id = %event.id, silence = %silence.id, "alert silenced");
        self.registry.metrics().silenced("all");
        if let Some(incident) = current(tx, event).await? {
            let entry = silence_entry(event, silence, "alert handed to no rule".into());
            tx.timeline(&incident.id, &entry).await?;
        }
        Ok(())
    }

    /// Record what the rules answered to `event` in `tx`; with `mute`,
    /// their notification requests are dropped (and noted on the incident).
    async fn record(
        &self,
        tx: &mut Tx,
        event: &model::Event,
        calls: Vec<Call>,
        mute: Option<&Silence>,
        committed: &mut Vec<(Arc<Plugin>, Vec<StateWrite>)>,
    ) -> Result<(), store::Error> {
        if mute.is_some() && event.kind == ALERT_RAISED {
            self.registry.metrics().silenced("notifications");
        }
        for call in calls {
            match call.result {
                Ok(mut inv) => {
                    let muted = match mute {
                        Some(_) => std::mem::take(&mut inv.output.notifications).len(),
                        None => 0,
                    };
                    tx.write_plugin_state(&call.rule, &inv.writes).await?;
                    let incident = apply(tx, event, &call.rule, &inv.output).await?;
                    set_timers(tx, event, &call.rule, incident.as_deref(), &inv.timers).await?;
                    if let (Some(s), Some(id)) = (mute, &incident)
                        && muted > 0
                    {
                        let what = format!("{muted} notification(s) from {} muted", call.rule);
                        tx.timeline(id, &silence_entry(event, s, what)).await?;
                    }
                    tx.log_decision(&DecisionRecord {
                        event,
                        rule: &call.rule,
                        build: call
                            .plugin
                            .as_deref()
                            .map(|p| (p.info().version.as_str(), p.digest())),
                        incident_id: incident.as_deref(),
                        decision: Some(
                            serde_json::to_string(&inv.output).expect("decision serialises"),
                        ),
                        error: None,
                    })
                    .await?;
                    if let Some(p) = call.plugin {
                        committed.push((p, inv.writes));
                    }
                }
                Err(e) => {
                    tracing::warn!(rule = %call.rule, event.id = %event.id, error = %e, "rule failed on event");
                    let error = format!("{}: {e}", e.kind());
                    tx.log_decision(&DecisionRecord {
                        event,
                        rule: &call.rule,
                        build: call
                            .plugin
                            .as_deref()
                            .map(|p| (p.info().version.as_str(), p.digest())),
                        incident_id: event.correlation.incident_id.as_deref(),
                        decision: None,
                        error: Some(error.clone()),
                    })
                    .await?;
                    // Kept for inspection and replay.
                    self.registry.metrics().dead_letter(RuleStage::NAME);
                    tx.dead_letter(
                        RuleStage::NAME,
                        event,
                        &format!("rule {}: {error}", call.rule),
                        call.attempts as i64,
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }
}

/// Decide a lane's events in order, each over the writes of those before.
async fn decide_lane(
    registry: &Registry,
    attempts: u32,
    lane: Vec<(usize, Received)>,
) -> Vec<(usize, Vec<Call>, tracing::Span)> {
    let mut overlays = Overlays::new();
    let mut answers = Vec::with_capacity(lane.len());
    let many = lane.len() > 1;
    for (i, received) in lane {
        let span = super::event_span(RuleStage::NAME, &received.event);
        let calls = decide(registry, attempts, &received, &overlays)
            .instrument(span.clone())
            .await;
        if many {
            for call in &calls {
                if let Ok(inv) = &call.result
                    && !inv.writes.is_empty()
                {
                    let overlay = Arc::make_mut(overlays.entry(call.rule.clone()).or_default());
                    for w in &inv.writes {
                        overlay.insert(w.key.clone(), w.value.clone());
                    }
                }
            }
        }
        answers.push((i, calls, span));
    }
    answers
}

/// Invoke `plugin` through `op`, retrying retryable failures.
async fn call<F, Fut>(
    registry: &Registry,
    attempts: u32,
    plugin: Arc<Plugin>,
    operation: &str,
    op: F,
) -> Call
where
    F: Fn(Arc<Plugin>) -> Fut,
    Fut: Future<Output = Result<Invocation<types::Decision>, runtime::Error>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = op(plugin.clone()).await;
        let result = registry.observe(&plugin, operation, result).await;
        match result {
            Err(e) if e.is_retryable() && attempt < attempts => {
                tracing::warn!(rule = plugin.name(), attempt, error = %e, "rule failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
            }
            result => {
                return Call {
                    rule: plugin.name().to_owned(),
                    plugin: Some(plugin),
                    result,
                    attempts: attempt,
                };
            }
        }
    }
}

/// What the rule that asked for an action hears of it.
pub(crate) fn outcome_of(event: &model::Event, data: &ActionData) -> types::ActionOutcome {
    let result = match (&data.result, &data.error) {
        (Some(r), _) => Ok(r.clone()),
        (None, Some(e)) => Err(e.clone()),
        (None, None) => Err(types::PluginError::Permanent("no result recorded".into())),
    };
    types::ActionOutcome {
        action_id: event.correlation.action_id.clone().unwrap_or_default(),
        request: data.request.clone(),
        result,
        attempts: data.attempts,
    }
}

/// Ask the rules about an event, over the lane's uncommitted writes: a
/// new alert or event goes to every rule subscribed to it, an action's
/// outcome to the rule that asked for the action.
async fn decide(
    registry: &Registry,
    attempts: u32,
    received: &Received,
    overlays: &Overlays,
) -> Vec<Call> {
    let event = &received.event;
    let overlay = |rule: &str| overlays.get(rule).cloned();
    let data = match (&received.payload, received.kind) {
        (Payload::Alert | Payload::Received, _) => {
            let mut calls = Vec::new();
            for plugin in registry.rules_for(event) {
                let o = overlay(plugin.name());
                calls.push(
                    call(registry, attempts, plugin, "decide", |p| {
                        let o = o.clone();
                        async move { p.decide_after(event, o).await }
                    })
                    .await,
                );
            }
            return calls;
        }
        (Payload::Action(data), EventKind::ActionCompleted | EventKind::ActionFailed) => data,
        // A timer goes to the rule that set it, and no other.
        (Payload::Timer(timer), _) => {
            let plugin = match registry.get(&timer.rule) {
                Ok(p) => p,
                Err(e) => {
                    return vec![Call {
                        rule: timer.rule.clone(),
                        plugin: None,
                        result: Err(e),
                        attempts: 0,
                    }];
                }
            };
            let o = overlay(plugin.name());
            return vec![
                call(registry, attempts, plugin, "decide", |p| {
                    let o = o.clone();
                    async move { p.decide_after(event, o).await }
                })
                .await,
            ];
        }
        // Not a kind this stage subscribes to.
        _ => return Vec::new(),
    };
    let plugin = match registry.get(&data.rule) {
        Ok(p) => p,
        Err(e) => {
            return vec![Call {
                rule: data.rule.clone(),
                plugin: None,
                result: Err(e),
                attempts: 0,
            }];
        }
    };
    let outcome = outcome_of(event, data);
    let op = if outcome.result.is_ok() {
        "on-action-completed"
    } else {
        "on-action-failed"
    };
    let (outcome, o) = (&outcome, overlay(plugin.name()));
    vec![
        call(registry, attempts, plugin, op, |p| {
            let o = o.clone();
            async move { p.on_action_outcome_after(event, outcome, o).await }
        })
        .await,
    ]
}

impl Stage for RuleStage {
    const NAME: &'static str = "rules";
    const KINDS: &'static [&'static str] = &[
        ALERT_RAISED,
        EVENT_RECEIVED,
        ACTION_COMPLETED,
        ACTION_FAILED,
        TIMER_FIRED,
    ];

    async fn handle(&self, events: &[Received]) -> Result<(), store::Error> {
        // Rules are called outside the transaction (never hold the write
        // lock across a sandbox call); the inbox check is repeated inside.
        let ids: Vec<&str> = events.iter().map(|r| r.event.id.as_str()).collect();
        let seen = self.store.inbox_seen(Self::NAME, &ids).await?;
        let fresh: Vec<&Received> = events
            .iter()
            .filter(|r| !seen.contains(&r.event.id))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        if self.shared_state {
            self.registry.refresh_states().await?;
        }
        let silences = Active::load(&self.store, now_ms()).await?;
        let effects: Vec<Option<Effect<'_>>> =
            fresh.iter().map(|r| silences.effect(&r.event)).collect();
        let mut verdicts = Vec::with_capacity(fresh.len());
        for r in &fresh {
            verdicts.push(self.verdict(r).await?);
        }
        // Silenced alerts and verifications that passed go to no rule.
        let undecided = |e: &Option<Effect<'_>>, v: &Option<Verdict>| {
            matches!(e, Some(Effect::Skip(_))) || matches!(v, Some(Verdict::Passed(_)))
        };
        let to_decide: Vec<&Received> = fresh
            .iter()
            .zip(effects.iter().zip(&verdicts))
            .filter(|(_, (e, v))| !undecided(e, v))
            .map(|(r, _)| *r)
            .collect();
        let answers = self.decide_all(&to_decide).await;

        let mut tx = self.store.begin(store::Holder::Rules).await?;
        let fresh_ids: Vec<&str> = fresh.iter().map(|r| r.event.id.as_str()).collect();
        let new = tx.inbox_many(Self::NAME, &fresh_ids).await?;
        // The incidents the batch's events belong to and the ones its
        // decisions open under a dedup key, looked up together.
        let incident_ids: Vec<&str> = fresh
            .iter()
            .filter_map(|r| r.event.correlation.incident_id.as_deref())
            .collect();
        let dedup_keys: Vec<&str> = answers
            .iter()
            .flat_map(|(calls, _)| calls)
            .filter_map(|c| match &c.result {
                Ok(inv) => match &inv.output.incident {
                    Some(types::IncidentDirective::Open(o)) => Some(o.dedup_key.as_str()),
                    _ => None,
                },
                Err(_) => None,
            })
            .collect();
        tx.prefetch_incidents(&incident_ids, &dedup_keys).await?;
        let mut answers = answers.into_iter();
        let mut committed = Vec::new();
        let mut failed_verifications = Vec::new();
        for ((received, effect), verdict) in fresh.into_iter().zip(effects).zip(verdicts) {
            let event = &received.event;
            let answer = if undecided(&effect, &verdict) {
                None
            } else {
                Some(answers.next().expect("an answer per decided event"))
            };
            // Another instance got there first: its effects stand.
            if !new.contains(&event.id) {
                continue;
            }
            if received.kind == EventKind::ActionCompleted {
                self.arm_verification(&mut tx, received).await?;
            }
            if let Some(v) = &verdict {
                record_verdict(&mut tx, event, v).await?;
                if let Verdict::Failed(d) = v {
                    failed_verifications.push(d.clone());
                }
            }
            match (effect, answer) {
                (Some(Effect::Skip(s)), _) => self.record_silenced(&mut tx, event, s).await?,
                (effect, Some((calls, span))) => {
                    let mute = match effect {
                        Some(Effect::Mute(s)) => Some(s),
                        _ => None,
                    };
                    self.record(&mut tx, event, calls, mute, &mut committed)
                        .instrument(span)
                        .await?
                }
                // A verification that passed: recorded above.
                (_, None) => {}
            }
        }
        tx.commit().await?;
        // The in-memory state follows the store only once it is durable.
        for (plugin, writes) in committed {
            plugin.apply_writes(&writes);
        }
        // A mitigation that did not work counts against its target.
        for d in failed_verifications {
            self.registry
                .target_breaker(&d.action, &d.target)
                .record(true);
        }
        Ok(())
    }
}

/// What checking a verification timer found.
#[derive(Debug, Clone)]
enum Verdict {
    /// The alert resolved in time: nothing for the rule to do.
    Passed(VerifyData),
    /// Still firing: recorded, counted against the target, and handed to
    /// the rule to decide.
    Failed(VerifyData),
}

impl RuleStage {
    /// The verdict on a verification timer (`None` for any other event).
    async fn verdict(&self, received: &Received) -> Result<Option<Verdict>, store::Error> {
        let Payload::Timer(t) = &received.payload else {
            return Ok(None);
        };
        if !t.key.starts_with(VERIFY_TIMER) {
            return Ok(None);
        }
        let Ok(data) = serde_json::from_str::<VerifyData>(&t.data) else {
            return Ok(None);
        };
        let firing = match &received.event.alert {
            Some(a) => self
                .store
                .alert_state(&a.fingerprint, a.starts_at)
                .await?
                .is_some_and(|(status, _)| status == "firing"),
            None => false,
        };
        Ok(Some(if firing {
            Verdict::Failed(data)
        } else {
            Verdict::Passed(data)
        }))
    }

    /// When a completed action was asked to be verified: the timer that
    /// checks its alert `verify_secs` later, in the decision's transaction.
    async fn arm_verification(&self, tx: &mut Tx, received: &Received) -> Result<(), store::Error> {
        let (Payload::Action(d), Some(action_id)) =
            (&received.payload, &received.event.correlation.action_id)
        else {
            return Ok(());
        };
        let Some(secs) = d.verify_secs else {
            return Ok(());
        };
        let key = format!("{VERIFY_TIMER}{action_id}");
        let data = VerifyData {
            action_id: action_id.clone(),
            action: d.request.action.clone(),
            target: d.request.target.clone(),
            within_secs: secs,
        };
        let fired = derive(
            &received.event,
            TIMER_FIRED,
            "eventpulse/verify",
            received.event.correlation.clone(),
            &TimerData {
                rule: d.rule.clone(),
                key: key.clone(),
                data: serde_json::to_string(&data).expect("verify data serialises"),
            },
        );
        let due = self.registry.clock().now_ms() as i64 + (secs as i64) * 1000;
        tx.set_timer(&d.rule, &key, due, &fired).await
    }
}

/// A verification's verdict on the incident's timeline.
async fn record_verdict(
    tx: &mut Tx,
    event: &model::Event,
    verdict: &Verdict,
) -> Result<(), store::Error> {
    let Some(incident) = current(tx, event).await? else {
        return Ok(());
    };
    let (d, cause) = match verdict {
        Verdict::Passed(d) => (
            d,
            format!(
                "mitigation verified: the alert resolved within {} s of {} on {}",
                d.within_secs, d.action, d.target
            ),
        ),
        Verdict::Failed(d) => (
            d,
            format!(
                "mitigation did not resolve the alert: {} on {} completed, still firing after {} s",
                d.action, d.target, d.within_secs
            ),
        ),
    };
    let entry = TimelineEntry {
        at: now_ms(),
        kind: "verification".into(),
        from_status: None,
        to_status: None,
        cause,
        event_id: event.id.clone(),
        ref_id: Some(d.action_id.clone()),
    };
    tx.timeline(&incident.id, &entry).await
}

/// Persist the timers `rule` set or cancelled while deciding `event`: each
/// fires as a `timer.fired` in `event`'s trace and correlation (and the
/// incident the decision touched).
async fn set_timers(
    tx: &mut Tx,
    event: &model::Event,
    rule: &str,
    incident: Option<&str>,
    timers: &[model::TimerWrite],
) -> Result<(), store::Error> {
    for t in timers {
        match &t.set {
            None => tx.cancel_timer(rule, &t.key).await?,
            Some((due_at, data)) => {
                let mut correlation = event.correlation.clone();
                if let Some(id) = incident {
                    correlation.incident_id = Some(id.to_owned());
                }
                let fired = derive(
                    event,
                    TIMER_FIRED,
                    &format!("eventpulse/rule/{rule}"),
                    correlation,
                    &TimerData {
                        rule: rule.to_owned(),
                        key: t.key.clone(),
                        data: data.clone(),
                    },
                );
                tx.set_timer(rule, &t.key, *due_at, &fired).await?;
            }
        }
    }
    Ok(())
}

/// A timeline entry saying what `silence` did about `event`.
fn silence_entry(event: &model::Event, silence: &Silence, what: String) -> TimelineEntry {
    TimelineEntry {
        at: now_ms(),
        kind: "silence".into(),
        from_status: None,
        to_status: None,
        cause: format!(
            "{what}: silence {} by {} ({})",
            silence.id, silence.created_by, silence.comment
        ),
        event_id: event.id.clone(),
        ref_id: Some(silence.id.clone()),
    }
}

/// The incident `event` already belongs to: its correlation, else the
/// newest incident its alert series was linked to.
async fn current(tx: &mut Tx, event: &model::Event) -> Result<Option<Incident>, store::Error> {
    if let Some(id) = &event.correlation.incident_id {
        return tx.incident(id).await;
    }
    match &event.alert {
        Some(a) => tx.incident_for_alert(&a.fingerprint).await,
        None => Ok(None),
    }
}

/// Link the event's alert to `incident` (timeline entry when new).
async fn link(
    tx: &mut Tx,
    incident: &Incident,
    event: &model::Event,
) -> Result<bool, store::Error> {
    let Some(a) = &event.alert else {
        return Ok(false);
    };
    if !tx
        .link_alert(&incident.id, &a.fingerprint, a.starts_at)
        .await?
    {
        return Ok(false);
    }
    tx.timeline(&incident.id, &alert_attached(event, a)).await?;
    Ok(true)
}

/// The timeline entry for `alert` joining an incident.
fn alert_attached(event: &model::Event, alert: &model::Alert) -> TimelineEntry {
    TimelineEntry {
        at: now_ms(),
        kind: "alert".into(),
        from_status: None,
        to_status: None,
        cause: format!("alert {} attached", alert.name),
        event_id: event.id.clone(),
        ref_id: event.correlation.alert_id.clone(),
    }
}

/// Apply one rule's decision inside `tx`; returns the incident it concerned.
async fn apply(
    tx: &mut Tx,
    event: &model::Event,
    rule: &str,
    decision: &types::Decision,
) -> Result<Option<String>, store::Error> {
    let source = format!("eventpulse/rule/{rule}");
    let mut announce: Vec<(&str, String)> = Vec::new();
    let mut incident = match &decision.incident {
        Some(types::IncidentDirective::Open(o)) => match tx.active_incident(&o.dedup_key).await? {
            Some(existing) => {
                if link(tx, &existing, event).await? {
                    announce.push((INCIDENT_UPDATED, "alert attached".into()));
                }
                Some(existing)
            }
            None => {
                let now = now_ms();
                let mut new = Incident {
                    id: uuid::Uuid::now_v7().to_string(),
                    dedup_key: o.dedup_key.clone(),
                    title: o.title.clone(),
                    service: o.service.clone(),
                    severity: Severity::from(o.severity),
                    status: IncidentStatus::Open,
                    summary: o.summary.clone(),
                    rule: rule.to_owned(),
                    trace_id: event.trace_id.clone(),
                    opened_at: now,
                    updated_at: now,
                    closed_at: None,
                    last_notified_at: None,
                    acknowledged_by: None,
                    acknowledged_at: None,
                };
                let entry = |kind: &str, from, to, cause: String| TimelineEntry {
                    at: now,
                    kind: kind.into(),
                    from_status: from,
                    to_status: Some(to),
                    cause,
                    event_id: event.id.clone(),
                    ref_id: None,
                };
                let opened = format!("opened by {rule}: {}", o.title);
                tx.timeline(
                    &new.id,
                    &entry("opened", None, IncidentStatus::Open, opened),
                )
                .await?;
                if let Some(a) = &event.alert {
                    // New, so its alert link is too.
                    tx.link_new_alert(&new.id, &a.fingerprint, a.starts_at);
                    tx.timeline(&new.id, &alert_attached(event, a)).await?;
                }
                announce.push((INCIDENT_OPENED, "opened".into()));
                // Asked for actions: mitigating from the start, recorded as
                // the transition it is, and written once.
                if !decision.actions.is_empty() {
                    let (open, mitigating) = (IncidentStatus::Open, IncidentStatus::Mitigating);
                    let cause = format!("{rule} requested {} action(s)", decision.actions.len());
                    let moved = entry("transition", Some(open), mitigating, cause);
                    tx.timeline(&new.id, &moved).await?;
                    new.status = mitigating;
                    announce.push((INCIDENT_UPDATED, "open → mitigating".into()));
                }
                tx.insert_incident(&new).await?;
                Some(new)
            }
        },
        Some(types::IncidentDirective::Transition(t)) => {
            let mut current = current(tx, event).await?;
            if let Some(i) = &mut current {
                let (from, to) = (i.status, IncidentStatus::from(t.status));
                let cause = format!("{rule}: {}", t.note);
                if transition(tx, i, to, &cause, &event.id).await? {
                    announce.push((INCIDENT_UPDATED, format!("{from} → {to}: {}", t.note)));
                }
            }
            current
        }
        None => current(tx, event).await?,
    };
    if !decision.actions.is_empty()
        && let Some(i) = incident
            .as_mut()
            .filter(|i| i.status == IncidentStatus::Open)
    {
        let cause = format!("{rule} requested {} action(s)", decision.actions.len());
        if transition(tx, i, IncidentStatus::Mitigating, &cause, &event.id).await? {
            announce.push((INCIDENT_UPDATED, "open → mitigating".into()));
        }
    }

    let incident_id = incident.as_ref().map(|i| i.id.clone());
    let correlation = |action_id: Option<String>| model::Correlation {
        alert_id: event.correlation.alert_id.clone(),
        incident_id: incident_id.clone(),
        action_id,
    };
    if let Some(i) = &incident {
        for (kind, change) in announce {
            let data = IncidentData {
                incident: i,
                change,
            };
            tx.append(&derive(event, kind, &source, correlation(None), &data))
                .await?;
        }
    }
    // Verification asks ride in the decision as a reserved signal.
    let verify: Vec<VerifyAsk> = decision
        .signals
        .iter()
        .filter(|s| s.name == VERIFY_SIGNAL)
        .filter_map(|s| serde_json::from_str(&s.data).ok())
        .collect();
    let approve: Vec<ApprovalAsk> = decision
        .signals
        .iter()
        .filter(|s| s.name == APPROVAL_SIGNAL)
        .filter_map(|s| serde_json::from_str(&s.data).ok())
        .collect();
    for request in &decision.actions {
        let action_id = uuid::Uuid::now_v7().to_string();
        let verify_secs = verify
            .iter()
            .find(|v| v.action == request.action && v.target == request.target)
            .map(|v| v.within_secs);
        let approval = approve
            .iter()
            .any(|a| a.action == request.action && a.target == request.target);
        let data = ActionData {
            rule: rule.to_owned(),
            request: request.clone(),
            result: None,
            error: None,
            attempts: 0,
            verify_secs,
            approval,
        };
        let requested = derive(
            event,
            ACTION_REQUESTED,
            &source,
            correlation(Some(action_id.clone())),
            &data,
        );
        tx.append(&requested).await?;
        if let Some(id) = &incident_id {
            tx.timeline(
                id,
                &TimelineEntry {
                    at: now_ms(),
                    kind: "action".into(),
                    from_status: None,
                    to_status: None,
                    cause: format!(
                        "action requested: {} on {} ({})",
                        request.action, request.target, request.reason
                    ),
                    event_id: requested.id.clone(),
                    ref_id: Some(action_id),
                },
            )
            .await?;
        }
    }
    // Acknowledged and unchanged since (a transition above ended the
    // acknowledgement): someone is on it, so no repeat notifications.
    let acknowledged = incident.as_ref().and_then(|i| i.acknowledged_by.as_deref());
    if let (Some(by), Some(id)) = (acknowledged, &incident_id)
        && !decision.notifications.is_empty()
    {
        let muted = decision.notifications.len();
        tx.timeline(
            id,
            &TimelineEntry {
                at: now_ms(),
                kind: "notification".into(),
                from_status: None,
                to_status: None,
                cause: format!("{muted} notification(s) from {rule} muted: acknowledged by {by}"),
                event_id: event.id.clone(),
                ref_id: None,
            },
        )
        .await?;
    }
    let notifications = if acknowledged.is_some() {
        &[][..]
    } else {
        &decision.notifications[..]
    };
    for request in notifications {
        let data = NotificationData {
            rule: rule.to_owned(),
            notification_id: uuid::Uuid::now_v7().to_string(),
            request: request.clone(),
            delivery: None,
            error: None,
            attempts: 0,
        };
        tx.append(&derive(
            event,
            NOTIFICATION_REQUESTED,
            &source,
            correlation(None),
            &data,
        ))
        .await?;
    }
    for signal in decision
        .signals
        .iter()
        .filter(|s| s.name != VERIFY_SIGNAL && s.name != APPROVAL_SIGNAL)
    {
        let data = SignalData {
            rule: rule.to_owned(),
            signal: signal.clone(),
        };
        tx.append(&derive(
            event,
            SIGNAL_EMITTED,
            &source,
            correlation(None),
            &data,
        ))
        .await?;
    }
    Ok(incident_id)
}
