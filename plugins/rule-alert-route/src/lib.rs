//! `rule-alert-route`: every alert handled out of the box.
//!
//! Routes come from the manifest's `[[config.routes]]`, matched in order
//! against the alert's labels with Alertmanager's matchers (`=`, `!=`,
//! `=~`, `!~`); the first match wins unless it sets `continue = true`. A
//! route either yields the alert to another rule (`yield_to = "<rule>"`:
//! this rule does nothing for it, so that rule's incident is the only one)
//! or says what the alert becomes:
//!
//! - firing: open (or join, by `dedup_key`) an incident with `title`,
//!   `body` (its summary), `service` and `severity`; notify the `channels`
//!   for that severity (`default` for the rest) with the same dedup key;
//!   request each of `actions` (`action`, `target`, `params`, and
//!   `require_approval = true` to have the host hold it until someone
//!   approves it);
//! - resolved: once every alert firing under that dedup key has resolved,
//!   resolve the incident and notify that it did (unless
//!   `notify_resolved = false`).
//!
//! Every string is a Jinja template (minijinja) over `labels`,
//! `annotations` and `alert` (`name`, `status`, `fingerprint`,
//! `severity`); a missing label renders empty and is falsy, so
//! `labels.service or labels.instance` works. Only the first matching route
//! that does not yield sets the incident; later `continue` routes add
//! notifications and actions.

use std::collections::BTreeMap;

use eventpulse_matchers::Matcher;
use eventpulse_sdk::{
    ALERT_RAISED, ActionRequest, Alert, AlertStatus, Context, Decision, Error, Event, IncidentOpen,
    IncidentStatus, NotificationRequest, Rule, Severity, Subscription,
};
use serde::Deserialize;

/// The rule; its routes are read from `[config]` on every invocation.
#[derive(Default)]
pub struct AlertRoute;

/// One `[[config.routes]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteConfig {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    matchers: Vec<String>,
    #[serde(default, rename = "continue")]
    keep_going: bool,
    #[serde(default)]
    yield_to: Option<String>,
    #[serde(default = "default_severity")]
    severity: String,
    #[serde(default = "default_service")]
    service: String,
    #[serde(default = "default_title")]
    title: String,
    #[serde(default = "default_body")]
    body: String,
    #[serde(default = "default_dedup_key")]
    dedup_key: String,
    /// Severity name (or `default`) → notifier names.
    #[serde(default)]
    channels: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    actions: Vec<ActionConfig>,
    #[serde(default = "yes")]
    notify_resolved: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionConfig {
    action: String,
    target: String,
    #[serde(default)]
    params: BTreeMap<String, toml::Value>,
    #[serde(default)]
    require_approval: bool,
}

fn default_severity() -> String {
    "{{ labels.severity | default('warning') }}".into()
}
fn default_service() -> String {
    "{{ labels.service or labels.job or labels.instance or 'unknown' }}".into()
}
fn default_title() -> String {
    "{{ alert.name }}{% if labels.service %} on {{ labels.service }}{% endif %}".into()
}
fn default_body() -> String {
    "{{ annotations.summary or annotations.description or alert.name }}".into()
}
fn default_dedup_key() -> String {
    "{{ alert.name }}/{{ labels.service or labels.instance or '' }}".into()
}
fn yes() -> bool {
    true
}

/// A route, its matchers parsed.
struct Route {
    name: String,
    matchers: Vec<Matcher>,
    config: RouteConfig,
}

/// The routes of `[config] routes`, parsed; a mistake in them is a
/// permanent error naming the route.
fn routes(cx: &Context<'_>) -> Result<Vec<Route>, Error> {
    #[derive(Deserialize)]
    struct Wrapper {
        routes: Vec<RouteConfig>,
    }
    let Some(text) = cx.config("routes") else {
        return Err(Error::permanent("config `routes` is missing"));
    };
    let parsed: Wrapper = toml::from_str(&format!("routes = {text}"))
        .map_err(|e| Error::permanent(format!("config `routes`: {e}")))?;
    parsed
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, config)| {
            let name = config.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
            let matchers = config
                .matchers
                .iter()
                .map(|m| Matcher::parse(m))
                .collect::<Result<_, _>>()
                .map_err(|e| Error::permanent(format!("route {name}: matcher {e}")))?;
            Ok(Route {
                name,
                matchers,
                config,
            })
        })
        .collect()
}

/// The routes `alert` goes to, in order.
fn matching<'r>(routes: &'r [Route], alert: &Alert) -> Vec<&'r Route> {
    let mut out = Vec::new();
    for route in routes {
        if route.matchers.iter().all(|m| m.matches(&alert.labels.0)) {
            out.push(route);
            if !route.config.keep_going {
                break;
            }
        }
    }
    out
}

/// Renders a route's templates for one alert.
struct Renderer<'a> {
    env: minijinja::Environment<'static>,
    vars: minijinja::Value,
    route: &'a str,
}

impl<'a> Renderer<'a> {
    fn new(alert: &Alert, route: &'a str) -> Renderer<'a> {
        let map = |l: &eventpulse_sdk::Labels| -> BTreeMap<String, String> {
            l.0.iter().cloned().collect()
        };
        let status = match alert.status {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        };
        let vars = minijinja::context! {
            labels => map(&alert.labels),
            annotations => map(&alert.annotations),
            alert => minijinja::context! {
                name => alert.name.clone(),
                status => status,
                fingerprint => alert.fingerprint.clone(),
                severity => alert.severity.map(|s| s.as_str()),
            },
        };
        Renderer {
            env: minijinja::Environment::new(),
            vars,
            route,
        }
    }

    /// `v` as JSON, every string in it rendered as a template.
    fn value(&self, field: &str, v: &toml::Value) -> Result<serde_json::Value, Error> {
        use serde_json::Value as J;
        Ok(match v {
            toml::Value::String(t) => J::String(self.render(field, t)?),
            toml::Value::Array(items) => J::Array(
                items
                    .iter()
                    .map(|i| self.value(field, i))
                    .collect::<Result<_, _>>()?,
            ),
            toml::Value::Table(t) => J::Object(
                t.iter()
                    .map(|(k, i)| Ok((k.clone(), self.value(&format!("{field}.{k}"), i)?)))
                    .collect::<Result<_, Error>>()?,
            ),
            other => serde_json::to_value(other)
                .map_err(|e| Error::permanent(format!("route {} {field}: {e}", self.route)))?,
        })
    }

    fn render(&self, field: &str, template: &str) -> Result<String, Error> {
        self.env
            .render_str(template, &self.vars)
            .map(|s| s.trim().to_owned())
            .map_err(|e| Error::permanent(format!("route {} {field}: {e}", self.route)))
    }
}

/// Plugin-state key of the fingerprints firing under `dedup_key`.
fn firing_key(dedup_key: &str) -> String {
    format!("firing:{dedup_key}")
}

fn firing(cx: &Context<'_>, dedup_key: &str) -> Vec<String> {
    cx.state_get(&firing_key(dedup_key))
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default()
}

fn set_firing(cx: &Context<'_>, dedup_key: &str, fingerprints: &[String]) {
    let key = firing_key(dedup_key);
    if fingerprints.is_empty() {
        cx.state_delete(&key);
    } else {
        let value = serde_json::to_string(fingerprints).expect("strings serialise");
        cx.state_set(&key, &value, None);
    }
}

impl Rule for AlertRoute {
    fn description(&self) -> String {
        "every alert → an incident and a notification, by Alertmanager-style routes".into()
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::kind(ALERT_RAISED)]
    }

    fn decide(&self, event: &Event, cx: &Context<'_>) -> Result<Decision, Error> {
        let Some(alert) = &event.alert else {
            return Ok(Decision::none().note("not an alert"));
        };
        let routes = routes(cx)?;
        let matched = matching(&routes, alert);
        if matched.is_empty() {
            return Ok(Decision::none().note("no route matched"));
        }
        let mut decision = Decision::none();
        let mut notes = Vec::new();
        let mut incident_set = false;
        for route in matched {
            let c = &route.config;
            if let Some(owner) = &c.yield_to {
                notes.push(format!("route {} yields to {owner}", route.name));
                continue;
            }
            let r = Renderer::new(alert, &route.name);
            let severity = Severity::parse(&r.render("severity", &c.severity)?.to_lowercase())
                .unwrap_or(Severity::Warning);
            let title = r.render("title", &c.title)?;
            let body = r.render("body", &c.body)?;
            let dedup_key = r.render("dedup_key", &c.dedup_key)?;
            if dedup_key.is_empty() {
                return Err(Error::permanent(format!(
                    "route {}: dedup_key rendered empty",
                    route.name
                )));
            }
            let channels = c
                .channels
                .get(severity.as_str())
                .or_else(|| c.channels.get("default"))
                .cloned()
                .unwrap_or_default();
            let mut fps = firing(cx, &dedup_key);
            match alert.status {
                AlertStatus::Firing => {
                    if !fps.contains(&alert.fingerprint) {
                        fps.push(alert.fingerprint.clone());
                        set_firing(cx, &dedup_key, &fps);
                    }
                    if !incident_set {
                        incident_set = true;
                        decision = decision.open_incident(IncidentOpen {
                            title: title.clone(),
                            service: r.render("service", &c.service)?,
                            severity,
                            dedup_key: dedup_key.clone(),
                            summary: body.clone(),
                        });
                    }
                    for channel in &channels {
                        decision = decision.notify(
                            NotificationRequest::new(channel, severity, &title, &body)
                                .dedup_key(&dedup_key),
                        );
                    }
                    for a in &c.actions {
                        let mut request = ActionRequest::new(
                            r.render("action", &a.action)?,
                            r.render("target", &a.target)?,
                        )
                        .reason(format!("{title} (route {})", route.name));
                        for (k, v) in &a.params {
                            request = request.param(k, r.value(&format!("params.{k}"), v)?);
                        }
                        if a.require_approval {
                            decision = decision.require_approval(&request.action, &request.target);
                        }
                        decision = decision.action(request);
                    }
                    notes.push(format!("route {}: {dedup_key} firing", route.name));
                }
                AlertStatus::Resolved => {
                    if !fps.contains(&alert.fingerprint) {
                        // Never seen firing (silenced, or fired before this
                        // rule was installed): not this rule's incident.
                        notes.push(format!(
                            "route {}: {dedup_key} was not firing here",
                            route.name
                        ));
                        continue;
                    }
                    fps.retain(|f| f != &alert.fingerprint);
                    set_firing(cx, &dedup_key, &fps);
                    if !fps.is_empty() {
                        notes.push(format!(
                            "route {}: {} alert(s) of {dedup_key} still firing",
                            route.name,
                            fps.len()
                        ));
                        continue;
                    }
                    if !incident_set {
                        incident_set = true;
                        decision = decision.transition(
                            IncidentStatus::Resolved,
                            format!("{} resolved", alert.name),
                        );
                    }
                    if c.notify_resolved {
                        for channel in &channels {
                            decision = decision.notify(
                                NotificationRequest::new(
                                    channel,
                                    Severity::Info,
                                    format!("Resolved: {title}"),
                                    &body,
                                )
                                .dedup_key(format!("{dedup_key}/resolved")),
                            );
                        }
                    }
                    notes.push(format!("route {}: {dedup_key} resolved", route.name));
                }
            }
        }
        Ok(decision.note(notes.join("; ")))
    }
}

eventpulse_sdk::export_rule!(AlertRoute);

#[cfg(test)]
mod tests {
    use super::*;
    use eventpulse_sdk::IncidentDirective;
    use eventpulse_sdk::testing::{FakeHost, alert_event};

    /// The shipped manifest's routes, as the host hands them over (a
    /// `[config]` table that is not a string arrives as TOML text).
    fn shipped() -> String {
        let manifest: toml::Table = include_str!("../plugin.toml").parse().unwrap();
        manifest["config"]["routes"].to_string()
    }

    fn firing(name: &str, labels: &[(&str, &str)]) -> Event {
        alert_event(name, AlertStatus::Firing, labels)
    }

    #[test]
    fn shipped_defaults_open_and_notify_any_alert_and_resolve_it() {
        let host = FakeHost::new().config("routes", &shipped());
        let cx = host.context();
        let mut e = firing(
            "AlwaysFiring",
            &[("service", "web"), ("severity", "critical")],
        );
        e.alert
            .as_mut()
            .unwrap()
            .annotations
            .insert("summary", "it fires");
        let d = AlertRoute.decide(&e, &cx).unwrap();
        let Some(IncidentDirective::Open(open)) = &d.incident else {
            panic!("no incident: {d:?}");
        };
        assert_eq!(open.title, "AlwaysFiring on web");
        assert_eq!(open.summary, "it fires");
        assert_eq!(open.service, "web");
        assert_eq!(open.severity, Severity::Critical);
        assert_eq!(open.dedup_key, "AlwaysFiring/web");
        assert_eq!(d.notifications.len(), 1);
        assert_eq!(d.notifications[0].channel, "notifier-log");
        assert!(d.actions.is_empty());

        let mut resolved = e.clone();
        resolved.alert.as_mut().unwrap().status = AlertStatus::Resolved;
        let d = AlertRoute.decide(&resolved, &cx).unwrap();
        assert!(matches!(
            d.incident,
            Some(IncidentDirective::Transition {
                status: IncidentStatus::Resolved,
                ..
            })
        ));
        assert_eq!(d.notifications[0].title, "Resolved: AlwaysFiring on web");
    }

    #[test]
    fn a_resolution_never_seen_firing_does_nothing() {
        let host = FakeHost::new().config("routes", &shipped());
        let e = alert_event("DiskFull", AlertStatus::Resolved, &[("service", "db")]);
        let d = AlertRoute.decide(&e, &host.context()).unwrap();
        assert!(d.incident.is_none() && d.notifications.is_empty(), "{d:?}");
    }

    #[test]
    fn cpu_alerts_are_yielded_to_the_autoscaler() {
        let host = FakeHost::new().config("routes", &shipped());
        let d = AlertRoute
            .decide(&firing("HighCPU", &[("service", "app")]), &host.context())
            .unwrap();
        assert!(d.incident.is_none() && d.notifications.is_empty(), "{d:?}");
        assert!(d.note.unwrap().contains("yields to rule-cpu-autoscale"));
        let d = AlertRoute
            .decide(&firing("cpu_high", &[("service", "app")]), &host.context())
            .unwrap();
        assert!(d.incident.is_some(), "not HighCPU: routed by default");
    }

    #[test]
    fn an_incident_resolves_when_its_last_alert_does() {
        let host = FakeHost::new().config("routes", &shipped());
        let cx = host.context();
        let mut a = firing("DiskFull", &[("service", "db")]);
        let mut b = a.clone();
        b.alert.as_mut().unwrap().fingerprint = "fp-other-disk".into();
        AlertRoute.decide(&a, &cx).unwrap();
        AlertRoute.decide(&b, &cx).unwrap();
        a.alert.as_mut().unwrap().status = AlertStatus::Resolved;
        let d = AlertRoute.decide(&a, &cx).unwrap();
        assert!(d.incident.is_none(), "one still fires: {d:?}");
        b.alert.as_mut().unwrap().status = AlertStatus::Resolved;
        let d = AlertRoute.decide(&b, &cx).unwrap();
        assert!(d.incident.is_some(), "both resolved: {d:?}");
    }

    #[test]
    fn routes_match_in_order_with_continue_channels_by_severity_and_actions() {
        let routes = r#"[
            { name = "db", matchers = ['service=~"db|cache"', 'severity!="info"'], continue = true,
              channels = { critical = ["pager"], default = ["chat"] },
              actions = [{ action = "action-container-restart", target = "{{ labels.container }}", require_approval = true,
                           params = { reason = "{{ alert.name }}", grace_secs = 10,
                                      containers = ["{{ labels.container }}"] } }] },
            { name = "audit", matchers = [], channels = { default = ["log"] } },
            { name = "never", matchers = [] },
        ]"#;
        let host = FakeHost::new().config("routes", routes);
        let e = firing(
            "Down",
            &[
                ("service", "db"),
                ("severity", "critical"),
                ("container", "db-1"),
            ],
        );
        let d = AlertRoute.decide(&e, &host.context()).unwrap();
        let channels: Vec<&str> = d.notifications.iter().map(|n| n.channel.as_str()).collect();
        assert_eq!(
            channels,
            ["pager", "log"],
            "db (continue), then audit, not never"
        );
        assert_eq!(d.actions.len(), 1);
        assert_eq!(d.actions[0].target, "db-1");
        let approval = d
            .signals
            .iter()
            .find(|s| s.name == "eventpulse.approval")
            .unwrap();
        assert_eq!(approval.data["target"], "db-1");
        assert_eq!(d.actions[0].params["reason"], "Down");
        assert_eq!(d.actions[0].params["grace_secs"], 10);
        assert_eq!(
            d.actions[0].params["containers"],
            serde_json::json!(["db-1"])
        );

        let e = firing("Down", &[("service", "web"), ("severity", "warning")]);
        let d = AlertRoute.decide(&e, &host.context()).unwrap();
        let channels: Vec<&str> = d.notifications.iter().map(|n| n.channel.as_str()).collect();
        assert_eq!(channels, ["log"]);
        assert!(d.actions.is_empty());
    }

    #[test]
    fn mistakes_in_routes_are_permanent_errors_naming_the_route() {
        for (routes, want) in [
            (
                r#"[{ name = "x", matchers = ['sev~"a"'] }]"#,
                "route x: matcher",
            ),
            (
                r#"[{ name = "y", title = "{{ unclosed" }]"#,
                "route y title",
            ),
            (r#"[{ nme = "typo" }]"#, "unknown field"),
            (
                r#"[{ name = "z", dedup_key = "{{ labels.nothing }}" }]"#,
                "dedup_key rendered empty",
            ),
        ] {
            let host = FakeHost::new().config("routes", routes);
            let e = AlertRoute
                .decide(&firing("A", &[]), &host.context())
                .unwrap_err();
            assert!(matches!(e, Error::Permanent(_)), "{e:?}");
            assert!(format!("{e:?}").contains(want), "{routes}: {e:?}");
        }
    }
}
