//! The timer task: fires the durable timers rules set (see
//! `store/timers.rs`) when the host clock reaches them. It looks at least
//! once a second, so a timer fires within about a second of being due, and
//! one that came due while the host was down fires at start.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{sleep_or_cancel, store_backoff};
use crate::runtime::Clock;
use crate::store::Store;

/// Timers fired per transaction.
const BATCH: u32 = 256;
/// The longest the task sleeps between looks.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Fire due timers until `cancel` fires; a failing store is retried with
/// backoff (a timer is never lost: its row stays until it has fired).
pub async fn run(store: Store, clock: Clock, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut wait = store_backoff();
    loop {
        let now = clock.now_ms() as i64;
        let pause = match store.fire_timers(now, BATCH).await {
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
