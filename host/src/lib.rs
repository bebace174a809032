//! # EventPulse host
//!
//! The trusted half of EventPulse: it owns the store, the plugin registry
//! and the WebAssembly sandbox that rules, actions and notifiers run in,
//! and serves the admin API.
//!
//! ## Layout
//!
//! - [`model`]: the domain model (events and kinds, alerts, incidents and
//!   their lifecycle, jobs); no I/O.
//! - [`config`]: the one typed configuration (file + `EVENTPULSE_*` env).
//! - [`store`]: everything persisted; all SQL lives here.
//! - [`runtime`]: wasmtime engine, capabilities lent to plugins, limits,
//!   circuit breaker, invocation; the plugin contract's types stop here.
//! - [`ingest`]: parsing and validating what arrives (Alertmanager v4,
//!   CloudEvents, Kubernetes Warning events) and committing it in groups.
//! - [`sources`]: event sources the host pulls itself (a Kubernetes
//!   cluster's Warning events, listed and watched with a checkpoint).
//! - [`pipeline`]: the stages and work queues an event travels through.
//! - [`registry`]: the plugin directory as the registry (hot reload,
//!   enable/disable).
//! - [`api`]: the admin HTTP API.
//! - [`console`]: the operator's console, server-rendered under `/ui`.
//! - [`telemetry`]: logs, Prometheus metrics, readiness.
//! - [`app`]: builds the above from a config and runs their tasks.
//! - [`scaffold`]: `eventpulse plugin new` and `plugin build`.
//! - [`replay`]: a rule over stored events, diffed against what was
//!   decided then (`eventpulse replay`, `POST /api/v1/replay`).

pub mod api;
pub mod app;
pub mod config;
pub mod console;
pub mod ingest;
pub mod model;
pub mod pipeline;
pub mod plugin_run;
pub mod registry;
pub mod replay;
pub mod runtime;
pub mod scaffold;
pub mod sources;
pub mod store;
pub mod telemetry;
