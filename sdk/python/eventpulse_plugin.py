"""EventPulse plugins in Python: the shape of the Rust SDK over the
bindings componentize-py generates from the WIT contract.

A plugin module (``app.py``) defines one class named after the world's
export (``RulePlugin``, ``ActionPlugin`` or ``NotifierPlugin``) whose
methods receive ``(event, cx)`` like the Rust traits; ``rule(...)``,
``action(...)`` and ``notifier(...)`` below turn such a class into the
export componentize-py expects::

    from eventpulse_plugin import Decision, Severity, rule

    @rule(name="rule-disk-full", subscribe=[("alert.raised", {"alertname": "DiskFull"})])
    class RulePlugin:
        def decide(self, event, cx):
            service = event.label("service") or "unknown"
            return Decision.none().open_incident(f"Disk full on {service}", service, Severity.WARNING)

The plugin runs under the same sandbox as a Rust one: its manifest's
grants, fuel, deadline and memory limit.
"""

import json

from componentize_py_types import Err
from wit_world.imports import clock, config, log, state
from wit_world.imports import eventpulse_plugin_types as t

# Imported here, not where it is used: componentize-py bundles only the
# modules imported while it builds the component.
import eventpulse_http

Severity = t.Severity
AlertStatus = t.AlertStatus
IncidentStatus = t.IncidentStatus


class Error(Exception):
    """A plugin failure the host records: ``retryable`` ones are tried
    again with backoff, permanent ones are not."""

    def __init__(self, message, retryable=False):
        super().__init__(message)
        self.retryable = retryable

    def to_wit(self):
        if self.retryable:
            return t.PluginError_Retryable(str(self))
        return t.PluginError_Permanent(str(self))


class Event:
    """The event being handled, with label and annotation lookup."""

    def __init__(self, raw):
        self.raw = raw
        self.id = raw.id
        self.kind = raw.kind
        self.key = raw.key
        self.time = raw.time
        self.alert = raw.alert
        self.correlation = raw.correlation

    def label(self, name):
        """A label of the alert (or of the event when it has no alert)."""
        pairs = self.raw.alert.labels if self.raw.alert else self.raw.labels
        return dict(pairs).get(name)

    def annotation(self, name):
        pairs = self.raw.alert.annotations if self.raw.alert else self.raw.annotations
        return dict(pairs).get(name)

    def data(self):
        """The kind's payload as a Python value."""
        return json.loads(self.raw.data or "null")

    @property
    def firing(self):
        return self.raw.alert is not None and self.raw.alert.status == AlertStatus.FIRING


class Decision:
    """What a rule decided; build it with the chained methods."""

    def __init__(self):
        self.incident = None
        self.actions = []
        self.notifications = []
        self.signals = []
        self.note = None

    @staticmethod
    def none():
        return Decision()

    def open_incident(self, title, service, severity, dedup_key=None, summary=""):
        self.incident = t.IncidentDirective_Open(
            t.IncidentOpen(title, service, severity, dedup_key or f"{title}/{service}", summary)
        )
        return self

    def transition(self, status, note=""):
        self.incident = t.IncidentDirective_Transition(t.IncidentTransition(status, note))
        return self

    def action(self, action, target, params=None, reason=""):
        self.actions.append(t.ActionRequest(action, target, json.dumps(params or {}), reason))
        return self

    def notify(self, channel, severity, title, body="", dedup_key=None, fields=()):
        self.notifications.append(
            t.NotificationRequest(channel, severity, title, body, dedup_key, list(fields))
        )
        return self

    def signal(self, name, data=None):
        self.signals.append(t.Signal(name, json.dumps(data or {})))
        return self

    def with_note(self, note):
        self.note = note
        return self

    def to_wit(self):
        return t.Decision(self.incident, self.actions, self.notifications, self.signals, self.note)


class State:
    """The plugin's state, kept by the host; writes count only if the
    invocation succeeds."""

    def get(self, key):
        return state.get(key)

    def set(self, key, value, ttl_ms=None):
        state.set(key, value, ttl_ms)

    def delete(self, key):
        state.delete(key)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def check(self):
        """Raise a (retryable for 5xx and 429) error unless 2xx."""
        if 200 <= self.status < 300:
            return self
        retry = self.status >= 500 or self.status == 429
        raise Error(f"HTTP {self.status}: {self.body[:200]!r}", retryable=retry)


class Context:
    """What the host lends an invocation: config, secrets, state, clock,
    logs and outgoing HTTP (only to hosts the manifest grants)."""

    def __init__(self):
        self.state = State()

    def config(self, key, default=None):
        value = config.get(key)
        return default if value is None else value

    def secret(self, name):
        return config.secret(name)

    def now(self):
        """Milliseconds since the epoch, from the host's clock."""
        return clock.now()

    def info(self, message):
        log.log(log.Level.INFO, message)

    def warn(self, message):
        log.log(log.Level.WARN, message)

    def http(self, method, url, headers=(), body=b""):
        """One request through wasi:http; the host refuses destinations
        outside the grant (raised as a permanent Error)."""
        if isinstance(body, str):
            body = body.encode()
        status, got_headers, got = eventpulse_http.send(method, url, list(headers), body)
        return Response(status, got_headers, got.decode("utf-8", "replace"))

    def post_json(self, url, value, headers=()):
        headers = [("content-type", "application/json")] + list(headers)
        return self.http("POST", url, headers, json.dumps(value))


def _info(name, version, kind, description, subscribe):
    subs = [t.Subscription(k, list((labels or {}).items())) for k, labels in subscribe]
    return t.PluginInfo(name, version, kind, description, subs)


def _guarded(call):
    try:
        return call()
    except Error as e:
        raise Err(e.to_wit())
    except Exception as e:  # a bug in the plugin: permanent, with its text
        raise Err(t.PluginError_Permanent(f"{type(e).__name__}: {e}"))


def rule(name, version="0.1.0", description="", subscribe=()):
    """Make a class with ``decide(event, cx)`` (and optionally
    ``on_action_completed`` / ``on_action_failed(event, outcome, cx)``)
    the rule export."""

    def wrap(cls):
        user = cls()

        class Export:
            def describe(self):
                return _info(name, version, t.PluginKind.RULE, description, subscribe)

            def decide(self, event):
                return _guarded(lambda: user.decide(Event(event), Context()).to_wit())

            def on_action_completed(self, event, outcome):
                handler = getattr(user, "on_action_completed", None)
                if handler is None:
                    return Decision.none().to_wit()
                return _guarded(lambda: handler(Event(event), outcome, Context()).to_wit())

            def on_action_failed(self, event, outcome):
                handler = getattr(user, "on_action_failed", None)
                if handler is None:
                    return Decision.none().to_wit()
                return _guarded(lambda: handler(Event(event), outcome, Context()).to_wit())

        return Export

    return wrap


def action(name, version="0.1.0", description=""):
    """Make a class with ``run(event, request, cx) -> (summary, details)``
    the action export."""

    def wrap(cls):
        user = cls()

        class Export:
            def describe(self):
                return _info(name, version, t.PluginKind.ACTION, description, ())

            def run(self, event, request):
                def call():
                    summary, details = user.run(Event(event), request, Context())
                    return t.ActionResult(summary, json.dumps(details))

                return _guarded(call)

        return Export

    return wrap


def notifier(name, version="0.1.0", description=""):
    """Make a class with ``deliver(event, request, cx) -> detail`` the
    notifier export."""

    def wrap(cls):
        user = cls()

        class Export:
            def describe(self):
                return _info(name, version, t.PluginKind.NOTIFIER, description, ())

            def deliver(self, event, request):
                return _guarded(
                    lambda: t.Delivery(None, str(user.deliver(Event(event), request, Context())))
                )

        return Export

    return wrap
