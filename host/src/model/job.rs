//! Work-queue jobs: one action or one notification, and its status.

use serde::Serialize;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for its next attempt.
    Pending,
    /// An attempt is running (or was cut off by a crash).
    Running,
    /// An action that succeeded.
    Completed,
    /// A notification that went out.
    Delivered,
    /// Gave up.
    Failed,
    /// Never ran: an action's rate limit refused it.
    Refused,
    /// Never ran: a duplicate notification inside the dedup window.
    Suppressed,
    /// An action held until someone approves it (or it expires).
    AwaitingApproval,
    /// Never ran: an approver rejected it.
    Rejected,
    /// Never ran: nobody approved it within its approval timeout.
    Expired,
}

impl JobStatus {
    /// Every status.
    pub const ALL: [JobStatus; 10] = [
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Delivered,
        JobStatus::Failed,
        JobStatus::Refused,
        JobStatus::Suppressed,
        JobStatus::AwaitingApproval,
        JobStatus::Rejected,
        JobStatus::Expired,
    ];

    /// Lower-case name, as stored and shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Delivered => "delivered",
            JobStatus::Failed => "failed",
            JobStatus::Refused => "refused",
            JobStatus::Suppressed => "suppressed",
            JobStatus::AwaitingApproval => "awaiting_approval",
            JobStatus::Rejected => "rejected",
            JobStatus::Expired => "expired",
        }
    }

    /// From the stored name.
    pub fn parse(name: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Still to run or running.
    pub fn is_active(self) -> bool {
        matches!(self, JobStatus::Pending | JobStatus::Running)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compared with its name (`status == "pending"`), as tests and scripts read it.
impl PartialEq<&str> for JobStatus {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

/// A unit of work in a queue: one action or one notification.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Job {
    /// `action_id` or notification id.
    pub id: String,
    /// The incident it belongs to.
    pub incident_id: Option<String>,
    /// The rule that asked for it.
    pub rule: String,
    /// The action or notifier plugin.
    pub plugin: String,
    /// What it acts on (action target, notification dedup key or title).
    pub target: String,
    /// Where it is.
    pub status: JobStatus,
    /// Attempts started so far.
    pub attempts: i64,
    /// When the next attempt is due (ms).
    pub next_attempt_at: i64,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// What the plugin reported (JSON).
    pub result: Option<String>,
    /// The requesting event (JSON).
    #[serde(skip)]
    pub request: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_by_name() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobStatus::parse("done"), None);
    }
}
