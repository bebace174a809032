//! Ingest: turning what monitoring systems send into events. The parsers
//! here are pure (no I/O); the HTTP handlers in [`crate::api`] write the
//! result durably (alerts + outbox in one transaction) before answering,
//! through [`group_commit`], which coalesces concurrent requests into one
//! transaction.

pub mod alertmanager;
pub mod cloudevents;
pub mod group_commit;
pub mod kubernetes;
