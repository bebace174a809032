//! Actions waiting for approval: an `awaiting_approval` row in `actions`
//! whose `next_attempt_at` is when the wait expires. The executor only
//! claims `pending` rows, so nothing here can run until a ruling moves it
//! there. Every change is one conditional update, so a ruling and the
//! expiry sweep (on any instance) cannot both win.

use sqlx::Row;

use super::queues::JOB_COLUMNS;
use super::rows::job_from;
use super::{Error, Queue, Store, Tx};
use crate::model::{AuditRecord, Job, JobStatus};

impl Tx {
    /// Record `job` as waiting for approval until `expires_at` (ms),
    /// written at commit.
    pub fn hold_for_approval(&mut self, job: &Job, expires_at: i64) {
        let mut job = job.clone();
        job.next_attempt_at = expires_at;
        self.pending
            .jobs
            .push((Queue::Actions, job, JobStatus::AwaitingApproval, None));
    }

    /// Move a waiting action to `to` (`pending`, due now, when approved;
    /// `rejected` with `error` saying by whom) if it is still waiting and
    /// not expired at `now`. `false`: it was not (someone else ruled, or
    /// it expired).
    pub async fn rule_on_approval(
        &mut self,
        id: &str,
        to: JobStatus,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE actions SET status = $1, last_error = $2, next_attempt_at = $3, updated_at = $3
             WHERE id = $4 AND status = 'awaiting_approval' AND next_attempt_at > $3",
        )
        .bind(to.as_str())
        .bind(error)
        .bind(now)
        .bind(id)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Expire up to `limit` waits that ran out by `now`; returns those
    /// actions as they were before (their requests, to announce).
    pub async fn expire_approvals(&mut self, now: i64, limit: u32) -> Result<Vec<Job>, Error> {
        let rows = sqlx::query(&format!(
            "UPDATE actions SET status = 'expired', updated_at = $1,
                    last_error = 'expired: nobody approved it in time'
             WHERE id IN (SELECT id FROM actions
                          WHERE status = 'awaiting_approval' AND next_attempt_at <= $1
                          ORDER BY next_attempt_at LIMIT $2)
               AND status = 'awaiting_approval'
             RETURNING {JOB_COLUMNS}"
        ))
        .bind(now)
        .bind(limit as i64)
        .fetch_all(self.conn())
        .await?;
        rows.iter()
            .map(|r| job_from(r).map_err(Error::from))
            .collect()
    }

    /// Append an audit record in this transaction.
    pub async fn audit(&mut self, r: &AuditRecord) -> Result<(), Error> {
        super::audit::insert(self.conn(), r).await
    }
}

impl Store {
    /// Actions waiting for approval, the soonest to expire first.
    pub async fn awaiting_approval(&self) -> Result<Vec<Job>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM actions WHERE status = 'awaiting_approval'
             ORDER BY next_attempt_at, id"
        ))
        .fetch_all(&self.reads)
        .await?;
        Ok(rows.iter().map(job_from).collect::<Result<_, _>>()?)
    }

    /// When the soonest wait for approval expires.
    pub async fn next_approval_expiry(&self) -> Result<Option<i64>, Error> {
        let row = sqlx::query(
            "SELECT MIN(next_attempt_at) FROM actions WHERE status = 'awaiting_approval'",
        )
        .fetch_one(&self.reads)
        .await?;
        Ok(row.get(0))
    }
}
