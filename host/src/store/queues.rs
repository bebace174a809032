//! The two work queues (`actions`, `notifications`): jobs, claims, attempt
//! ends, the rate-limit count and notification dedup.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::Serialize;
use sqlx::Row;

use super::{Backend, Error, Holder, Store, now_ms};
use crate::model::{Job, JobStatus};

use super::rows::job_from;
use super::tx::{ROWS_PER_INSERT, Tx, multi_insert, params};

/// One of the two work queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Queue {
    /// `actions`: each requested action, recorded before it runs.
    Actions,
    /// `notifications`.
    Notifications,
}

impl Queue {
    /// Its table, which is also its name (in metrics, for one).
    pub fn table(self) -> &'static str {
        match self {
            Queue::Actions => "actions",
            Queue::Notifications => "notifications",
        }
    }
}

/// What notification deduplication decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedup {
    /// Send it; `suppressed` requests were held back since the last one.
    Send {
        /// Requests with this key so far, this one included.
        seen: i64,
        /// Held back since the last one that went out.
        suppressed: i64,
    },
    /// Hold it back: one went out within the TTL.
    Suppress {
        /// Requests with this key so far, this one included.
        seen: i64,
    },
}

pub(super) const JOB_COLUMNS: &str = "id, incident_id, rule, plugin, target, status, attempts, \
                           next_attempt_at, last_error, result, request";

/// How an attempt ended, as the queue records it.
#[derive(Debug, Clone)]
pub enum JobEnd {
    /// Done: `completed` (actions) or `delivered` (notifications).
    Succeeded {
        /// The terminal status.
        status: JobStatus,
        /// What the plugin reported (JSON).
        result: String,
    },
    /// Try again at `at`.
    Retry {
        /// The error of this attempt.
        error: String,
        /// When (ms).
        at: i64,
    },
    /// Gave up.
    Failed {
        /// Why.
        error: String,
    },
}

impl Tx {
    /// Add a job to a queue, due now (written at commit; an id already
    /// there is left as it is).
    pub async fn enqueue(&mut self, queue: Queue, job: &Job) -> Result<(), Error> {
        self.insert_job(queue, job, JobStatus::Pending, None);
        Ok(())
    }

    /// Actions of `plugin` on `target` requested since `since_ms` that
    /// were not refused, rejected or expired (what a rate limit counts).
    pub async fn recent_actions(
        &mut self,
        plugin: &str,
        target: &str,
        since_ms: i64,
    ) -> Result<i64, Error> {
        // It counts jobs this transaction enqueued too.
        self.flush().await?;
        let row = sqlx::query(
            "SELECT COUNT(*) FROM actions
             WHERE plugin = $1 AND target = $2 AND created_at >= $3
               AND status NOT IN ('refused', 'rejected', 'expired')",
        )
        .bind(plugin)
        .bind(target)
        .bind(since_ms)
        .fetch_one(self.conn())
        .await?;
        Ok(row.get(0))
    }

    /// Record a job that will never run: `refused` (rate limit) or
    /// `suppressed` (duplicate notification), with why.
    pub async fn set_aside(
        &mut self,
        queue: Queue,
        job: &Job,
        status: JobStatus,
        why: &str,
    ) -> Result<(), Error> {
        self.insert_job(queue, job, status, Some(why));
        Ok(())
    }

    /// Count one notification request for (`channel`, `key`) at `now` and
    /// decide: suppressed if one went out less than `ttl_ms` ago, else
    /// send, with how many were suppressed since the last one. Answered
    /// from [`Tx::decide_dedup`] when the batch was decided there.
    pub async fn notification_dedup(
        &mut self,
        channel: &str,
        key: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<Dedup, Error> {
        let pair = (channel.to_owned(), key.to_owned());
        if let Some(decided) = self.dedup.get_mut(&pair).and_then(VecDeque::pop_front) {
            return Ok(decided);
        }
        let mut one = self.dedup_round(&[(channel, key)], now, ttl_ms).await?;
        Ok(one.remove(&pair).expect("the row it wrote"))
    }

    /// Decide deduplication for a batch's requests, in order (a key may
    /// repeat): one statement for each time the most repeated key occurs,
    /// not one per request. [`Tx::notification_dedup`] then hands out the
    /// decisions in the same order.
    pub async fn decide_dedup(
        &mut self,
        requests: &[(&str, &str)],
        now: i64,
        ttl_ms: i64,
    ) -> Result<(), Error> {
        let mut remaining: HashMap<(&str, &str), usize> = HashMap::new();
        let mut order: Vec<(&str, &str)> = Vec::new();
        for r in requests {
            let n = remaining.entry(*r).or_insert(0);
            if *n == 0 {
                order.push(*r);
            }
            *n += 1;
        }
        // Round k holds each key's k-th request: a key appears once per
        // statement (PostgreSQL refuses to upsert one row twice in one).
        while !order.is_empty() {
            for chunk in order.chunks(ROWS_PER_INSERT) {
                for (pair, decided) in self.dedup_round(chunk, now, ttl_ms).await? {
                    self.dedup.entry(pair).or_default().push_back(decided);
                }
            }
            order.retain(|r| {
                let n = remaining.get_mut(r).expect("counted");
                *n -= 1;
                *n > 0
            });
        }
        Ok(())
    }

    /// One statement deciding and counting one request for each of
    /// `pairs` (distinct), so concurrent instances (row lock on
    /// PostgreSQL) cannot both let the same key through. The `SET`
    /// expressions read the row as it was; the inserted row's
    /// `last_sent_at` is `now`.
    async fn dedup_round(
        &mut self,
        pairs: &[(&str, &str)],
        now: i64,
        ttl_ms: i64,
    ) -> Result<HashMap<(String, String), Dedup>, Error> {
        let within = format!("notification_dedup.last_sent_at > excluded.last_sent_at - {ttl_ms}");
        let sql = multi_insert(
            self.backend,
            "INSERT INTO notification_dedup
                 (channel, dedup_key, last_sent_at, seen, suppressed, sent_suppressed)",
            6,
            pairs.len(),
        ) + &format!(
            " ON CONFLICT (channel, dedup_key) DO UPDATE SET
                 seen = notification_dedup.seen + 1,
                 suppressed = CASE WHEN {within}
                     THEN notification_dedup.suppressed + 1 ELSE 0 END,
                 sent_suppressed = CASE WHEN {within}
                     THEN notification_dedup.sent_suppressed
                     ELSE notification_dedup.suppressed END,
                 last_sent_at = CASE WHEN {within}
                     THEN notification_dedup.last_sent_at ELSE excluded.last_sent_at END
             RETURNING channel, dedup_key, seen, suppressed, sent_suppressed"
        );
        let mut q = sqlx::query(&sql);
        for (channel, key) in pairs {
            q = q
                .bind(*channel)
                .bind(*key)
                .bind(now)
                .bind(1_i64)
                .bind(0_i64)
                .bind(0_i64);
        }
        let mut decided = HashMap::with_capacity(pairs.len());
        for row in q.fetch_all(self.conn()).await? {
            let (seen, held, before): (i64, i64, i64) = (
                row.try_get("seen")?,
                row.try_get("suppressed")?,
                row.try_get("sent_suppressed")?,
            );
            let dedup = if held > 0 {
                Dedup::Suppress { seen }
            } else {
                Dedup::Send {
                    seen,
                    suppressed: before,
                }
            };
            decided.insert((row.try_get("channel")?, row.try_get("dedup_key")?), dedup);
        }
        Ok(decided)
    }

    fn insert_job(&mut self, queue: Queue, job: &Job, status: JobStatus, error: Option<&str>) {
        self.pending
            .jobs
            .push((queue, job.clone(), status, error.map(str::to_owned)));
    }

    /// Claim pending jobs for an attempt each: `running`, attempts + 1.
    /// Returns the ids claimed (others were taken by someone else).
    pub async fn claim(&mut self, queue: Queue, ids: &[&str]) -> Result<HashSet<String>, Error> {
        let mut claimed = HashSet::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_INSERT) {
            let sql = claim_sql(self.backend, queue, chunk.len());
            let mut q = sqlx::query(&sql).bind(now_ms());
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(self.conn()).await? {
                claimed.insert(row.get::<String, _>(0));
            }
        }
        Ok(claimed)
    }

    /// Record how a running job's attempt ended (written at commit).
    pub async fn finish(&mut self, queue: Queue, id: &str, end: &JobEnd) -> Result<(), Error> {
        let now = now_ms();
        let (status, result, error, next) = match end {
            JobEnd::Succeeded { status, result } => (*status, Some(result.clone()), None, now),
            JobEnd::Retry { error, at } => (JobStatus::Pending, None, Some(error.clone()), *at),
            JobEnd::Failed { error } => (JobStatus::Failed, None, Some(error.clone()), now),
        };
        self.pending
            .ends
            .push((queue, id.to_owned(), status, result, error, next));
        Ok(())
    }
}

/// The claim of `n` pending jobs by id. They are found by id: given
/// `status = 'pending'` and a long id list, SQLite (which keeps no
/// statistics) plans a walk of the `*_due` index over every pending row
/// instead, tens of thousands of row reads per claim in a backlog; the unary
/// `+` keeps the status test off that index.
pub(super) fn claim_sql(backend: Backend, queue: Queue, n: usize) -> String {
    let status = match backend {
        Backend::Sqlite => "+status",
        Backend::Postgres => "status",
    };
    format!(
        "UPDATE {} SET status = 'running', attempts = attempts + 1, updated_at = {}
         WHERE id IN ({}) AND {status} = 'pending' RETURNING id",
        queue.table(),
        params(backend, 1, 1),
        params(backend, 2, n)
    )
}

impl Store {
    /// Jobs `running` since before `claimed_before` (ms) go back to
    /// `pending`: their attempt was cut off by a crash. Actions are
    /// convergent, so running one again is safe. Returns how many.
    pub async fn requeue_running(&self, queue: Queue, claimed_before: i64) -> Result<u64, Error> {
        let done = self
            .write_one(
                Holder::QueueClaim,
                sqlx::query(&format!(
                    "UPDATE {} SET status = 'pending', updated_at = $1
             WHERE status = 'running' AND updated_at < $2",
                    queue.table()
                ))
                .bind(now_ms())
                .bind(claimed_before),
            )
            .await?;
        Ok(done.rows_affected())
    }

    /// Pending jobs due at `now`, oldest first.
    pub async fn due(&self, queue: Queue, now: i64, limit: u32) -> Result<Vec<Job>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM {} WHERE status = 'pending' AND next_attempt_at <= $1
             ORDER BY next_attempt_at, id LIMIT $2",
            queue.table()
        ))
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&self.reads)
        .await?;
        Ok(rows.iter().map(job_from).collect::<Result<_, _>>()?)
    }

    /// When the earliest pending job is due.
    pub async fn next_due(&self, queue: Queue) -> Result<Option<i64>, Error> {
        let row = sqlx::query(&format!(
            "SELECT MIN(next_attempt_at) FROM {} WHERE status = 'pending'",
            queue.table()
        ))
        .fetch_one(&self.reads)
        .await?;
        Ok(row.get(0))
    }

    /// A job by id.
    pub async fn job(&self, queue: Queue, id: &str) -> Result<Option<Job>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM {} WHERE id = $1",
            queue.table()
        ))
        .bind(id)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.as_ref().map(job_from).transpose()?)
    }

    /// An incident's jobs in `queue`, oldest first.
    pub(super) async fn jobs_of(&self, queue: Queue, incident_id: &str) -> Result<Vec<Job>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM {} WHERE incident_id = $1 ORDER BY created_at, id",
            queue.table()
        ))
        .bind(incident_id)
        .fetch_all(&self.reads)
        .await?;
        Ok(rows.iter().map(job_from).collect::<Result<_, _>>()?)
    }
}
