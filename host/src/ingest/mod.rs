//! Ingest: turning what monitoring systems send into alerts. The parsers
//! here are pure (no I/O); the HTTP handlers and the transactional write of
//! alerts + outbox come with the pipeline.

pub mod alertmanager;
