//! Row counts, for tests and `eventpulse incidents`.

use serde::Serialize;
use sqlx::Row;

use super::{Error, Store};

/// Row counts, for tests and `eventpulse incidents`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Rows in `alerts`.
    pub alerts: i64,
    /// Rows in `outbox_events`.
    pub events: i64,
    /// Rows in `incidents`.
    pub incidents: i64,
    /// Rows in `actions`.
    pub actions: i64,
    /// Actions completed.
    pub actions_completed: i64,
    /// Rows in `notifications`.
    pub notifications: i64,
    /// Notifications delivered.
    pub notifications_delivered: i64,
    /// Rows in `dead_letters`.
    pub dead_letters: i64,
}

impl Store {
    /// Row counts of the pipeline's tables.
    pub async fn counts(&self) -> Result<Counts, Error> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM alerts),
                    (SELECT COUNT(*) FROM outbox_events),
                    (SELECT COUNT(*) FROM incidents),
                    (SELECT COUNT(*) FROM actions),
                    (SELECT COUNT(*) FROM actions WHERE status = 'completed'),
                    (SELECT COUNT(*) FROM notifications),
                    (SELECT COUNT(*) FROM notifications WHERE status = 'delivered'),
                    (SELECT COUNT(*) FROM dead_letters)",
        )
        .fetch_one(&self.reads)
        .await?;
        Ok(Counts {
            alerts: row.get(0),
            events: row.get(1),
            incidents: row.get(2),
            actions: row.get(3),
            actions_completed: row.get(4),
            notifications: row.get(5),
            notifications_delivered: row.get(6),
            dead_letters: row.get(7),
        })
    }

    /// Actions completed and notifications delivered: the two counts a
    /// caller waiting for the pipeline to drain needs, from the status
    /// indexes alone (not the whole-table counts of [`Store::counts`]).
    pub async fn finished_jobs(&self) -> Result<(i64, i64), Error> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM actions WHERE status = 'completed'),
                    (SELECT COUNT(*) FROM notifications WHERE status = 'delivered')",
        )
        .fetch_one(&self.reads)
        .await?;
        Ok((row.get(0), row.get(1)))
    }
}
