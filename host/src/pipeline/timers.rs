//! The timer task: fires the durable timers rules set (see
//! `store/timers.rs`) when the host clock reaches them. It looks at least
//! once a second, so a timer fires within about a second of being due, and
//! one that came due while the host was down fires at start.
//!
//! It also keeps each scheduled rule's (`[schedule] every_secs`) repeating
//! timer `schedule` armed: firing it moves it `every_secs` on in the same
//! transaction, so the next call is always on record and one that came due
//! while the host was down runs when it starts. A rule no longer scheduled
//! (schedule removed, disabled, deleted) has its timer dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::kinds::TIMER_FIRED;
use super::payload::TimerData;
use super::{sleep_or_cancel, store_backoff};
use crate::model;
use crate::registry::Registry;
use crate::store::{self, Store};

/// The key of a scheduled rule's timer.
pub const SCHEDULE: &str = "schedule";

/// Make the stored schedules `schedules` (rule, period in ms): arm the
/// rules that have no repeating timer, update changed periods, drop the
/// timers of rules no longer scheduled.
async fn arm_schedules(
    store: &Store,
    schedules: &[(String, u64)],
    now: i64,
) -> Result<(), store::Error> {
    let scheduled: Vec<String> = schedules.iter().map(|(r, _)| r.clone()).collect();
    for (rule, every_ms) in schedules.iter().cloned() {
        let event = model::Event {
            id: uuid::Uuid::now_v7().to_string(),
            kind: TIMER_FIRED.to_owned(),
            source: format!("eventpulse/schedule/{rule}"),
            time: now as u64,
            trace_id: hex::encode(rand::random::<[u8; 16]>()),
            span_id: String::new(),
            key: rule.clone(),
            correlation: model::Correlation::default(),
            labels: Vec::new(),
            annotations: Vec::new(),
            alert: None,
            data: serde_json::to_string(&TimerData {
                rule: rule.clone(),
                key: SCHEDULE.to_owned(),
                data: String::new(),
            })
            .expect("timer data serialises"),
        };
        if store
            .arm_repeating(
                &rule,
                SCHEDULE,
                now + every_ms as i64,
                every_ms as i64,
                &event,
            )
            .await?
        {
            tracing::info!(plugin.name = %rule, every_ms, "scheduled calls armed");
        }
    }
    store.disarm_repeating(SCHEDULE, &scheduled).await
}

/// Timers fired per transaction.
const BATCH: u32 = 256;
/// The longest the task sleeps between looks.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Fire due timers until `cancel` fires; a failing store is retried with
/// backoff (a timer is never lost: its row stays until it has fired).
pub async fn run(
    store: Store,
    registry: Arc<Registry>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let clock = registry.clock().clone();
    let mut wait = store_backoff();
    // The schedules last made true in the store: once armed, a repeating
    // timer stays armed, so the store is only touched when the registry's
    // schedules change (a plugin loaded, reloaded, enabled or disabled).
    let mut armed: Option<Vec<(String, u64)>> = None;
    loop {
        let now = clock.now_ms() as i64;
        let wanted = registry.schedules();
        let synced = if armed.as_ref() == Some(&wanted) {
            Ok(())
        } else {
            arm_schedules(&store, &wanted, now)
                .await
                .map(|()| armed = Some(wanted))
        };
        let fired = match synced {
            Ok(()) => store.fire_timers(now, BATCH).await,
            Err(e) => Err(e),
        };
        let pause = match fired {
            Ok(n) if n as u32 == BATCH => Duration::ZERO,
            Ok(n) => {
                if n > 0 {
                    tracing::info!(timers = n, "timers fired");
                }
                wait = store_backoff();
                match store.next_timer().await {
                    Ok(Some(due)) if due > now => {
                        Duration::from_millis((due - now) as u64).min(LOOK_EVERY)
                    }
                    Ok(Some(_)) => Duration::ZERO,
                    _ => LOOK_EVERY,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fire timers yet; retrying");
                wait.next().unwrap_or(LOOK_EVERY)
            }
        };
        if sleep_or_cancel(Some(pause), &cancel).await {
            return Ok(());
        }
    }
}
