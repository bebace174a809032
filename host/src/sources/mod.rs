//! Sources the host reads events from itself, beside the push endpoints
//! of `api::ingest`: each is a supervised task that stores what it reads
//! with its position, in one transaction, so it resumes after a restart.
//!
//! - [`kubernetes`]: a cluster's Warning events, listed then watched.

pub mod kubernetes;
