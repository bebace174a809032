"""`rule-disk-full`: a first-party EventPulse rule written in Python.

A `DiskFull` alert opens an incident for its service (critical when the
alert's `free_percent` annotation is below `critical_below_percent`,
else a warning) and notifies `channel`; when the alert resolves, the
incident is resolved. How many episodes each service has had is kept in
the plugin's state, so a repeat says so.
"""

from eventpulse_plugin import Decision, IncidentStatus, Severity, rule


@rule(
    name="rule-disk-full",
    description="DiskFull alerts → an incident per service, critical below a free-space threshold",
    subscribe=[("alert.raised", {"alertname": "DiskFull"})],
)
class RulePlugin:
    def decide(self, event, cx):
        service = event.label("service") or event.label("instance") or "unknown"
        if not event.firing:
            return Decision.none().transition(IncidentStatus.RESOLVED, f"disk on {service} has room again")

        threshold = float(cx.config("critical_below_percent", "5"))
        free = event.annotation("free_percent")
        critical = free is not None and float(free) < threshold
        severity = Severity.CRITICAL if critical else Severity.WARNING

        key = f"episodes:{service}"
        episodes = int(cx.state.get(key) or "0") + 1
        cx.state.set(key, str(episodes))

        title = f"Disk full on {service}"
        summary = event.annotation("summary") or title
        if free is not None:
            summary += f" ({free}% free)"
        decision = (
            Decision.none()
            .open_incident(title, service, severity, dedup_key=f"disk:{service}", summary=summary)
            .notify(cx.config("channel", "notifier-log"), severity, title, summary,
                    dedup_key=f"disk:{service}", fields=[("service", service), ("episode", str(episodes))])
            .with_note(f"episode {episodes} on {service}")
        )
        cx.info(f"{title}: episode {episodes}, {severity.name.lower()}")
        return decision
