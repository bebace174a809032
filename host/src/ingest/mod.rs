//! Ingest: turning what monitoring systems send into events. The parsers
//! here are pure (no I/O); the HTTP handlers in [`crate::api`] write the
//! result durably (alerts + outbox in one transaction) before answering.

pub mod alertmanager;
pub mod cloudevents;
pub mod kubernetes;
