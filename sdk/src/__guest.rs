//! The glue the export macros expand to: conversions between the SDK's types
//! and the generated WIT bindings, and [`WitHost`], the [`Host`] backed by the
//! real imports. Not part of the public API.
#![allow(missing_docs)]

use crate::__bindings::rule::eventpulse::plugin as wit;
use crate::__bindings::types as t;
use crate::context::{
    CapabilityError, Container, ContainerSpec, Context, DockerOp, Host, HttpRequest, HttpResponse,
    LogLevel, Node,
};
use crate::model::*;
use crate::{Action, Mail, Notifier, Rule};

/// The host's imports.
pub struct WitHost;

impl Host for WitHost {
    fn log(&self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Trace => wit::log::Level::Trace,
            LogLevel::Debug => wit::log::Level::Debug,
            LogLevel::Info => wit::log::Level::Info,
            LogLevel::Warn => wit::log::Level::Warn,
            LogLevel::Error => wit::log::Level::Error,
        };
        wit::log::log(level, message)
    }

    fn now(&self) -> Timestamp {
        wit::clock::now()
    }

    fn state_get(&self, key: &str) -> Option<String> {
        wit::state::get(key)
    }

    fn state_set(&self, key: &str, value: &str, ttl_ms: Option<u64>) {
        wit::state::set(key, value, ttl_ms)
    }

    fn timer_set(&self, key: &str, delay_ms: u64, data: &str) {
        wit::timer::set(key, delay_ms, data)
    }

    fn timer_cancel(&self, key: &str) {
        wit::timer::cancel(key)
    }

    fn state_delete(&self, key: &str) {
        wit::state::delete(key)
    }

    fn config(&self, key: &str) -> Option<String> {
        wit::config::get(key)
    }

    fn secret(&self, name: &str) -> Option<String> {
        wit::config::secret(name)
    }

    fn http(&self, request: &HttpRequest) -> Result<HttpResponse, CapabilityError> {
        http(request)
    }

    fn docker_list_containers(&self, selector: &Labels) -> Result<Vec<Container>, CapabilityError> {
        let list = wit::docker::list_containers(&selector.0).map_err(capability_error)?;
        Ok(list
            .into_iter()
            .map(|c| Container {
                id: c.id,
                name: c.name,
                image: c.image,
                state: c.state,
                health: c.health,
                labels: Labels(c.labels),
                created: c.created,
            })
            .collect())
    }

    fn docker_create_replica(
        &self,
        from: &str,
        name: Option<&str>,
    ) -> Result<String, CapabilityError> {
        wit::docker::create_replica(from, name).map_err(capability_error)
    }

    fn docker_create(&self, spec: &ContainerSpec) -> Result<String, CapabilityError> {
        let spec = wit::docker::ContainerSpec {
            name: spec.name.clone(),
            image: spec.image.clone(),
            env: spec.env.clone(),
            labels: spec.labels.0.clone(),
            cmd: spec.cmd.clone(),
            network: spec.network.clone(),
            privileged: spec.privileged,
            mounts: spec.mounts.clone(),
        };
        wit::docker::create(&spec).map_err(capability_error)
    }

    fn docker_op(&self, op: DockerOp, id: &str) -> Result<(), CapabilityError> {
        match op {
            DockerOp::Start => wit::docker::start(id),
            DockerOp::Stop(t) => wit::docker::stop(id, t),
            DockerOp::Restart(t) => wit::docker::restart(id, t),
            DockerOp::Remove => wit::docker::remove(id),
        }
        .map_err(capability_error)
    }

    fn docker_wait_healthy(&self, id: &str, timeout_ms: u32) -> Result<bool, CapabilityError> {
        wit::docker::wait_healthy(id, timeout_ms).map_err(capability_error)
    }

    fn docker_inspect(&self, id: &str) -> Result<serde_json::Value, CapabilityError> {
        host_json(wit::docker::inspect(id).map_err(capability_error)?)
    }

    fn kube_list_nodes(&self) -> Result<Vec<Node>, CapabilityError> {
        let nodes = wit::kube::list_nodes().map_err(capability_error)?;
        Ok(nodes
            .into_iter()
            .map(|n| Node {
                name: n.name,
                ready: n.ready,
                roles: n.roles,
                labels: Labels(n.labels),
                allocatable: Labels(n.allocatable),
                unschedulable: n.unschedulable,
            })
            .collect())
    }

    fn kube_get(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<serde_json::Value, CapabilityError> {
        host_json(wit::kube::get(kind, namespace, name).map_err(capability_error)?)
    }

    fn kube_list_pods(
        &self,
        namespace: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<serde_json::Value, CapabilityError> {
        host_json(wit::kube::list_pods(namespace, field_selector).map_err(capability_error)?)
    }

    fn kube_list_node_metrics(&self) -> Result<serde_json::Value, CapabilityError> {
        host_json(wit::kube::list_node_metrics().map_err(capability_error)?)
    }

    fn kube_cordon(&self, node: &str, unschedulable: bool) -> Result<(), CapabilityError> {
        wit::kube::cordon(node, unschedulable).map_err(capability_error)
    }

    fn kube_evict(&self, namespace: &str, pod: &str) -> Result<(), CapabilityError> {
        wit::kube::evict(namespace, pod).map_err(capability_error)
    }

    fn kube_delete_node(&self, node: &str) -> Result<(), CapabilityError> {
        wit::kube::delete_node(node).map_err(capability_error)
    }

    fn smtp_send(&self, mail: &Mail) -> Result<String, CapabilityError> {
        let mail = wit::smtp::Mail {
            to: mail.to.clone(),
            subject: mail.subject.clone(),
            text_body: mail.text_body.clone(),
            html_body: mail.html_body.clone(),
        };
        wit::smtp::send(&mail).map_err(capability_error)
    }
}

fn host_json(text: String) -> Result<serde_json::Value, CapabilityError> {
    serde_json::from_str(&text)
        .map_err(|e| CapabilityError::Failed(format!("host sent invalid JSON: {e}")))
}

/// Largest response body [`WitHost::http`] reads.
const MAX_HTTP_BODY: usize = 4 << 20;

fn http(request: &HttpRequest) -> Result<HttpResponse, CapabilityError> {
    use crate::__bindings::rule::wasi::http::{outgoing_handler, types as ht};
    use crate::__bindings::rule::wasi::io::streams::StreamError;

    let failed = |what: &str| CapabilityError::Failed(format!("http: {what}"));
    let (scheme, rest) = request
        .url
        .split_once("://")
        .ok_or_else(|| failed("url has no scheme"))?;
    let scheme = match scheme {
        "http" => ht::Scheme::Http,
        "https" => ht::Scheme::Https,
        other => return Err(failed(&format!("unsupported scheme `{other}`"))),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut fields: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    // Without a length the body would go out chunked.
    fields.push((
        "content-length".into(),
        request.body.len().to_string().into_bytes(),
    ));
    let headers =
        ht::Fields::from_list(&fields).map_err(|e| failed(&format!("bad header: {e:?}")))?;
    let out = ht::OutgoingRequest::new(headers);
    let method = match request.method.to_ascii_uppercase().as_str() {
        "GET" => ht::Method::Get,
        "POST" => ht::Method::Post,
        "PUT" => ht::Method::Put,
        "DELETE" => ht::Method::Delete,
        "PATCH" => ht::Method::Patch,
        "HEAD" => ht::Method::Head,
        other => ht::Method::Other(other.to_owned()),
    };
    out.set_method(&method).map_err(|()| failed("bad method"))?;
    out.set_scheme(Some(&scheme))
        .map_err(|()| failed("bad scheme"))?;
    out.set_authority(Some(authority))
        .map_err(|()| failed("bad authority"))?;
    out.set_path_with_query(Some(path))
        .map_err(|()| failed("bad path"))?;
    let body = out.body().map_err(|()| failed("no request body"))?;
    let pending = outgoing_handler::handle(out, None).map_err(http_error)?;

    // A refused request closes the body stream; the reason comes on the
    // response future, so a failed write is not the error to report.
    if let Ok(stream) = body.write() {
        for chunk in request.body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
    }
    let _ = ht::OutgoingBody::finish(body, None);

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(http_error(code)),
        Some(Err(())) | None => return Err(failed("response already taken")),
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| failed("no response body"))?;
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| failed("no response body stream"))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(CapabilityError::Unavailable(format!(
                        "http: reading body: {}",
                        e.to_debug_string()
                    )));
                }
            }
            if body.len() > MAX_HTTP_BODY {
                return Err(failed(&format!(
                    "response body larger than {MAX_HTTP_BODY} bytes"
                )));
            }
        }
    }
    let _ = ht::IncomingBody::finish(incoming);
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn http_error(code: crate::__bindings::rule::wasi::http::types::ErrorCode) -> CapabilityError {
    use crate::__bindings::rule::wasi::http::types::ErrorCode as E;
    match code {
        E::HttpRequestDenied => CapabilityError::NotGranted("http: host not granted".into()),
        E::DnsTimeout
        | E::DnsError(_)
        | E::DestinationNotFound
        | E::DestinationUnavailable
        | E::ConnectionRefused
        | E::ConnectionTerminated
        | E::ConnectionTimeout
        | E::ConnectionReadTimeout
        | E::ConnectionWriteTimeout => CapabilityError::Unavailable(format!("http: {code:?}")),
        other => CapabilityError::Failed(format!("http: {other:?}")),
    }
}

fn capability_error(e: t::CapabilityError) -> CapabilityError {
    match e {
        t::CapabilityError::NotGranted(m) => CapabilityError::NotGranted(m),
        t::CapabilityError::Denied(m) => CapabilityError::Denied(m),
        t::CapabilityError::Unavailable(m) => CapabilityError::Unavailable(m),
        t::CapabilityError::Failed(m) => CapabilityError::Failed(m),
    }
}

// ---- exports -------------------------------------------------------------

fn info(
    name: &str,
    version: &str,
    kind: t::PluginKind,
    description: String,
    subscriptions: Vec<Subscription>,
) -> t::PluginInfo {
    t::PluginInfo {
        name: name.into(),
        version: version.into(),
        kind,
        description,
        subscriptions: subscriptions
            .into_iter()
            .map(|s| t::Subscription {
                event_kind: s.event_kind,
                labels: s.labels.0,
            })
            .collect(),
    }
}

pub fn describe_rule<R: Rule>(name: &str, version: &str) -> t::PluginInfo {
    let rule = R::default();
    info(
        name,
        version,
        t::PluginKind::Rule,
        rule.description(),
        rule.subscriptions_in(&Context::imports()),
    )
}

pub fn describe_action<A: Action>(name: &str, version: &str) -> t::PluginInfo {
    let subs = vec![Subscription::kind(ACTION_REQUESTED)];
    info(
        name,
        version,
        t::PluginKind::Action,
        A::default().description(),
        subs,
    )
}

pub fn describe_notifier<N: Notifier>(name: &str, version: &str) -> t::PluginInfo {
    let subs = vec![Subscription::kind(NOTIFICATION_REQUESTED)];
    info(
        name,
        version,
        t::PluginKind::Notifier,
        N::default().description(),
        subs,
    )
}

pub fn decide<R: Rule>(event: t::Event) -> Result<t::Decision, t::PluginError> {
    let event = Event::from(event);
    let cx = Context::imports();
    let decided = if event.kind == TIMER_FIRED {
        match serde_json::from_str::<Timer>(&event.data) {
            Ok(timer) => R::default().on_timer(&event, &timer, &cx),
            Err(e) => Err(Error::permanent(format!("timer.fired data: {e}"))),
        }
    } else {
        R::default().decide(&event, &cx)
    };
    decided.map(Into::into).map_err(Into::into)
}

pub fn on_action_completed<R: Rule>(
    event: t::Event,
    outcome: t::ActionOutcome,
) -> Result<t::Decision, t::PluginError> {
    let (event, outcome) = (Event::from(event), ActionOutcome::from(outcome));
    R::default()
        .on_action_completed(&event, &outcome, &Context::imports())
        .map(Into::into)
        .map_err(Into::into)
}

pub fn on_action_failed<R: Rule>(
    event: t::Event,
    outcome: t::ActionOutcome,
) -> Result<t::Decision, t::PluginError> {
    let (event, outcome) = (Event::from(event), ActionOutcome::from(outcome));
    R::default()
        .on_action_failed(&event, &outcome, &Context::imports())
        .map(Into::into)
        .map_err(Into::into)
}

pub fn run<A: Action>(
    event: t::Event,
    request: t::ActionRequest,
) -> Result<t::ActionResult, t::PluginError> {
    let (event, request) = (Event::from(event), ActionRequest::from(request));
    A::default()
        .run(&event, &request, &Context::imports())
        .map(|r| t::ActionResult {
            summary: r.summary,
            details: r.details.to_string(),
        })
        .map_err(Into::into)
}

pub fn deliver<N: Notifier>(
    event: t::Event,
    request: t::NotificationRequest,
) -> Result<t::Delivery, t::PluginError> {
    let (event, request) = (Event::from(event), NotificationRequest::from(request));
    N::default()
        .deliver(&event, &request, &Context::imports())
        .map(|d| t::Delivery {
            remote_id: d.remote_id,
            detail: d.detail,
        })
        .map_err(Into::into)
}

// ---- conversions ---------------------------------------------------------

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

impl From<t::Severity> for Severity {
    fn from(s: t::Severity) -> Self {
        match s {
            t::Severity::Info => Severity::Info,
            t::Severity::Warning => Severity::Warning,
            t::Severity::Error => Severity::Error,
            t::Severity::Critical => Severity::Critical,
        }
    }
}

impl From<Severity> for t::Severity {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Info => t::Severity::Info,
            Severity::Warning => t::Severity::Warning,
            Severity::Error => t::Severity::Error,
            Severity::Critical => t::Severity::Critical,
        }
    }
}

impl From<IncidentStatus> for t::IncidentStatus {
    fn from(s: IncidentStatus) -> Self {
        match s {
            IncidentStatus::Open => t::IncidentStatus::Open,
            IncidentStatus::Mitigating => t::IncidentStatus::Mitigating,
            IncidentStatus::Resolved => t::IncidentStatus::Resolved,
            IncidentStatus::Failed => t::IncidentStatus::Failed,
        }
    }
}

impl From<t::Event> for Event {
    fn from(e: t::Event) -> Self {
        Event {
            id: e.id,
            kind: e.kind,
            source: e.source,
            time: e.time,
            trace_id: e.trace_id,
            key: e.key,
            correlation: Correlation {
                alert_id: e.correlation.alert_id,
                incident_id: e.correlation.incident_id,
                action_id: e.correlation.action_id,
            },
            labels: Labels(e.labels),
            annotations: Labels(e.annotations),
            alert: e.alert.map(|a| Alert {
                fingerprint: a.fingerprint,
                name: a.name,
                status: match a.status {
                    t::AlertStatus::Firing => AlertStatus::Firing,
                    t::AlertStatus::Resolved => AlertStatus::Resolved,
                },
                severity: a.severity.map(Into::into),
                labels: Labels(a.labels),
                annotations: Labels(a.annotations),
                starts_at: a.starts_at,
                ends_at: a.ends_at,
                generator_url: a.generator_url,
            }),
            data: e.data,
        }
    }
}

impl From<t::ActionRequest> for ActionRequest {
    fn from(r: t::ActionRequest) -> Self {
        ActionRequest {
            action: r.action,
            target: r.target,
            params: json(&r.params),
            reason: r.reason,
        }
    }
}

impl From<ActionRequest> for t::ActionRequest {
    fn from(r: ActionRequest) -> Self {
        t::ActionRequest {
            action: r.action,
            target: r.target,
            params: r.params.to_string(),
            reason: r.reason,
        }
    }
}

impl From<t::PluginError> for Error {
    fn from(e: t::PluginError) -> Self {
        match e {
            t::PluginError::Retryable(m) => Error::Retryable(m),
            t::PluginError::Permanent(m) => Error::Permanent(m),
            t::PluginError::RetryAfter(r) => Error::RetryAfter {
                message: r.message,
                after_ms: r.after_ms,
            },
        }
    }
}

impl From<Error> for t::PluginError {
    fn from(e: Error) -> Self {
        match e {
            Error::Retryable(m) => t::PluginError::Retryable(m),
            Error::Permanent(m) => t::PluginError::Permanent(m),
            Error::RetryAfter { message, after_ms } => {
                t::PluginError::RetryAfter(t::RetryLater { message, after_ms })
            }
        }
    }
}

impl From<t::ActionOutcome> for ActionOutcome {
    fn from(o: t::ActionOutcome) -> Self {
        ActionOutcome {
            action_id: o.action_id,
            request: o.request.into(),
            result: match o.result {
                Ok(r) => Ok(ActionResult {
                    summary: r.summary,
                    details: json(&r.details),
                }),
                Err(e) => Err(e.into()),
            },
            attempts: o.attempts,
        }
    }
}

impl From<t::NotificationRequest> for NotificationRequest {
    fn from(n: t::NotificationRequest) -> Self {
        NotificationRequest {
            channel: n.channel,
            severity: n.severity.into(),
            title: n.title,
            body: n.body,
            dedup_key: n.dedup_key,
            fields: Labels(n.fields),
        }
    }
}

impl From<NotificationRequest> for t::NotificationRequest {
    fn from(n: NotificationRequest) -> Self {
        t::NotificationRequest {
            channel: n.channel,
            severity: n.severity.into(),
            title: n.title,
            body: n.body,
            dedup_key: n.dedup_key,
            fields: n.fields.0,
        }
    }
}

impl From<Decision> for t::Decision {
    fn from(d: Decision) -> Self {
        t::Decision {
            incident: d.incident.map(|i| match i {
                IncidentDirective::Open(o) => t::IncidentDirective::Open(t::IncidentOpen {
                    title: o.title,
                    service: o.service,
                    severity: o.severity.into(),
                    dedup_key: o.dedup_key,
                    summary: o.summary,
                }),
                IncidentDirective::Transition { status, note } => {
                    t::IncidentDirective::Transition(t::IncidentTransition {
                        status: status.into(),
                        note,
                    })
                }
            }),
            actions: d.actions.into_iter().map(Into::into).collect(),
            notifications: d.notifications.into_iter().map(Into::into).collect(),
            signals: d
                .signals
                .into_iter()
                .map(|s| t::Signal {
                    name: s.name,
                    data: s.data.to_string(),
                })
                .collect(),
            note: d.note,
        }
    }
}
