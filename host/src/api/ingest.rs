//! Ingest: the Alertmanager webhook, CloudEvents and Kubernetes Warning
//! events. A 2xx is only answered once what was sent is committed.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use tracing::Instrument as _;

use super::auth::check_ingest_token;
use super::{ApiError, ApiState, ErrorBody};
use serde::Serialize;
use utoipa::ToSchema;

/// A generic event, taken.
#[derive(Serialize, ToSchema)]
pub(super) struct EventAccepted {
    /// The event's id.
    id: String,
    /// It had been taken before.
    duplicate: bool,
}

/// Kubernetes Warning events, taken.
#[derive(Serialize, ToSchema)]
pub(super) struct KubeAccepted {
    /// New occurrences.
    accepted: u64,
    /// Seen before.
    duplicates: u64,
    /// Not Warning events.
    ignored: u64,
    /// Each Warning's dedup key.
    dedup_keys: Vec<String>,
}

/// What `POST /api/v1/events/kubernetes` reads: one `core/v1` Event, an
/// `EventList`, or an array of Events. Only the document's: the body is
/// parsed by `ingest::kubernetes::parse`.
pub(super) struct KubeEventsBody;

impl utoipa::PartialSchema for KubeEventsBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        let object = || ObjectBuilder::new().schema_type(Type::Object);
        OneOfBuilder::new()
            .item(object().description(Some("an Event, or an EventList (`items`)")))
            .item(
                ArrayBuilder::new()
                    .items(object())
                    .max_items(Some(kubernetes::MAX_EVENTS))
                    .description(Some("Events")),
            )
            .into()
    }
}

impl ToSchema for KubeEventsBody {}

/// An Alertmanager notification, taken.
#[derive(Serialize, ToSchema)]
pub(super) struct AlertsAccepted {
    /// Alerts in the notification.
    accepted: u64,
    /// Of them, new instances or status changes (an event each).
    new_events: u64,
}
use crate::ingest::{alertmanager, cloudevents, kubernetes};
use crate::store::{IngestWrite, Ingested};
use crate::telemetry::trace;

fn body_or_error(
    s: &ApiState,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<axum::body::Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(s.ingest.max_body_bytes),
        _ => ApiError::BadRequest(e.body_text()),
    })
}

/// A generic event (CloudEvents 1.0, structured JSON). 202 once it is
/// durable (`duplicate: true` if it already was); 400 naming the attribute
/// at fault; 503 when the store cannot take it now.
#[utoipa::path(post, path = "/api/v1/events", tag = "ingest",
    request_body(content = Object, description = "a CloudEvents 1.0 event, structured JSON", content_type = "application/json"),
    responses((status = 202, body = EventAccepted), (status = 400, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn ingest_event(
    State(s): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<EventAccepted>), ApiError> {
    let (span, caller) = trace::ingest_span("cloudevents", &headers);
    let accepted = accept_event(&s, headers, caller, body)
        .instrument(span)
        .await;
    rejected(&s, "cloudevents", accepted)
}

pub(super) async fn accept_event(
    s: &ApiState,
    headers: axum::http::HeaderMap,
    caller: Option<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<EventAccepted>), ApiError> {
    check_ingest_token(s, &headers)?;
    let body = body_or_error(s, body)?;
    let mut event = cloudevents::parse(&body, crate::store::now_ms() as u64)
        .map_err(|e| ApiError::BadRequest(e.0))?;
    trace::stamp(&mut event, caller.as_deref());
    let id = event.id.clone();
    let new = match s.commits.commit(IngestWrite::Event(event)).await? {
        Ingested::Event { new } => new,
        Ingested::Alerts(_) => unreachable!("an event write has an event outcome"),
    };
    let outcome = if new { "accepted" } else { "deduplicated" };
    s.registry.metrics().ingested("cloudevents", outcome, 1);
    Ok((
        StatusCode::ACCEPTED,
        Json(EventAccepted {
            id,
            duplicate: !new,
        }),
    ))
}

/// Kubernetes Warning events (`?cluster=` names the cluster). 202 once
/// they are durable and counted; 400 naming the field at fault.
#[utoipa::path(post, path = "/api/v1/events/kubernetes", tag = "ingest",
    params(("cluster" = Option<String>, Query, description = "the cluster's name")),
    request_body(content = KubeEventsBody, description = "an Event, an EventList or an array of Events", content_type = "application/json"),
    responses((status = 202, body = KubeAccepted), (status = 400, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn ingest_kubernetes(
    State(s): State<ApiState>,
    headers: axum::http::HeaderMap,
    Query(q): Query<ClusterQuery>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<KubeAccepted>), ApiError> {
    let (span, caller) = trace::ingest_span("kubernetes", &headers);
    let accepted = accept_kubernetes(&s, headers, caller, q, body)
        .instrument(span)
        .await;
    rejected(&s, "kubernetes", accepted)
}

pub(super) async fn accept_kubernetes(
    s: &ApiState,
    headers: axum::http::HeaderMap,
    caller: Option<String>,
    q: ClusterQuery,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<KubeAccepted>), ApiError> {
    check_ingest_token(s, &headers)?;
    let body = body_or_error(s, body)?;
    let now = crate::store::now_ms();
    let zone = s.ingest.zone().unwrap_or(chrono_tz::UTC);
    let batch = kubernetes::parse(&body, q.cluster.as_deref().unwrap_or(""), now)
        .map_err(|e| ApiError::BadRequest(e.0))?;
    let (new, duplicates) = s
        .store
        .ingest_kube_events(
            &batch.warnings,
            |w, occurrences| {
                let mut e = w.event(occurrences, now as u64, zone);
                trace::stamp(&mut e, caller.as_deref());
                e
            },
            None,
        )
        .await?;
    let metrics = s.registry.metrics();
    metrics.ingested("kubernetes", "accepted", new);
    metrics.ingested("kubernetes", "deduplicated", duplicates);
    Ok((
        StatusCode::ACCEPTED,
        Json(KubeAccepted {
            accepted: new as u64,
            duplicates: duplicates as u64,
            ignored: batch.ignored as u64,
            dedup_keys: batch.warnings.iter().map(|w| w.dedup_key.clone()).collect(),
        }),
    ))
}

#[derive(serde::Deserialize)]
pub(super) struct ClusterQuery {
    cluster: Option<String>,
}

/// The Alertmanager webhook. 200 only once the alerts and their events are
/// durable; 4xx (never retried by Alertmanager) for a body that will never
/// be accepted; 503 (retried) when the store cannot take it now.
#[utoipa::path(post, path = "/api/v1/alerts/alertmanager", tag = "ingest",
    request_body(content = Object, description = "an Alertmanager webhook (version 4)", content_type = "application/json"),
    responses((status = 200, body = AlertsAccepted), (status = 400, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn ingest_alertmanager(
    State(s): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<Json<AlertsAccepted>, ApiError> {
    let (span, caller) = trace::ingest_span("alertmanager", &headers);
    let accepted = accept_alertmanager(&s, headers, caller, body)
        .instrument(span)
        .await;
    rejected(&s, "alertmanager", accepted)
}

/// Count a refused ingest request.
fn rejected<T>(s: &ApiState, source: &'static str, r: Result<T, ApiError>) -> Result<T, ApiError> {
    if r.is_err() {
        s.registry.metrics().ingested(source, "rejected", 1);
    }
    r
}

pub(super) async fn accept_alertmanager(
    s: &ApiState,
    headers: axum::http::HeaderMap,
    caller: Option<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<Json<AlertsAccepted>, ApiError> {
    check_ingest_token(s, &headers)?;
    let body = body_or_error(s, body)?;
    let notification =
        alertmanager::parse(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let now = crate::store::now_ms() as u64;
    let events = notification
        .alerts
        .iter()
        .map(|a| {
            let mut e = alertmanager::alert_raised(&notification, a, now);
            trace::stamp(&mut e, caller.as_deref());
            e
        })
        .collect();
    let write = IngestWrite::Alerts {
        group_key: notification.group_key,
        alerts: notification.alerts,
        events,
    };
    let outcome = match s.commits.commit(write).await? {
        Ingested::Alerts(outcome) => outcome,
        Ingested::Event { .. } => unreachable!("an alerts write has an alerts outcome"),
    };
    let metrics = s.registry.metrics();
    metrics.ingested("alertmanager", "accepted", outcome.events);
    metrics.ingested(
        "alertmanager",
        "deduplicated",
        outcome.alerts.saturating_sub(outcome.events),
    );
    Ok(Json(AlertsAccepted {
        accepted: outcome.alerts as u64,
        new_events: outcome.events as u64,
    }))
}
