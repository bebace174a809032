//! What active silences do to the alerts the rule stage sees: a firing
//! alert under a silence of mode `all` is handed to no rule; one under a
//! `notifications` silence, and a resolved alert under any silence, goes
//! to the rules with its notifications muted (so incidents still resolve
//! during maintenance). Either way the silence is recorded on the
//! incident it touches.

use eventpulse_matchers::Matcher;

use crate::model::{self, AlertStatus, EventKind, Silence, SilenceMode};
use crate::store::{self, Store};

/// What a silence does to one event.
#[derive(Debug, Clone, Copy)]
pub enum Effect<'a> {
    /// No rule sees it.
    Skip(&'a Silence),
    /// Rules run; their notification requests are dropped.
    Mute(&'a Silence),
}

/// The silences active at one moment, their matchers parsed.
pub struct Active(Vec<(Silence, Vec<Matcher>)>);

/// `matchers` parsed, or the first one that is not a matcher.
pub fn parse_matchers(matchers: &[String]) -> Result<Vec<Matcher>, String> {
    matchers.iter().map(|m| Matcher::parse(m)).collect()
}

impl Active {
    /// The silences active at `now`.
    pub async fn load(store: &Store, now: i64) -> Result<Active, store::Error> {
        let mut active = Vec::new();
        for s in store.silences(now, false).await? {
            if !s.active_at(now) {
                continue;
            }
            match parse_matchers(&s.matchers) {
                Ok(m) => active.push((s, m)),
                // Checked when it was created; a stored one that no longer
                // parses mutes nothing rather than everything.
                Err(e) => tracing::warn!(silence = %s.id, error = %e, "silence ignored"),
            }
        }
        Ok(Active(active))
    }

    /// What the active silences do to `event`: an `alert.raised` may be
    /// skipped or muted; a later event of the alert's handling (an action's
    /// outcome, which carries the alert) is only ever muted, so a
    /// remediation under way still finishes.
    pub fn effect(&self, event: &model::Event) -> Option<Effect<'_>> {
        let alert = event.alert.as_ref()?;
        let mut matching = self
            .0
            .iter()
            .filter(|(_, m)| m.iter().all(|m| m.matches(&alert.labels)))
            .map(|(s, _)| s)
            .peekable();
        let first = *matching.peek()?;
        let firing =
            event.kind == EventKind::AlertRaised.as_str() && alert.status == AlertStatus::Firing;
        Some(
            match matching.find(|s| firing && s.mode == SilenceMode::All) {
                Some(s) => Effect::Skip(s),
                None => Effect::Mute(first),
            },
        )
    }
}

/// A silence as asked for (admin API body, CLI flags).
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// Alertmanager matchers, at least one; all must match.
    pub matchers: Vec<String>,
    /// `all` (default) or `notifications`.
    #[serde(default)]
    pub mode: Option<String>,
    /// RFC 3339; default now.
    #[serde(default)]
    pub starts_at: Option<String>,
    /// RFC 3339; or give `duration_secs`.
    #[serde(default)]
    pub ends_at: Option<String>,
    /// From `starts_at`.
    #[serde(default)]
    pub duration_secs: Option<u64>,
    /// Only inside this weekly window (UTC).
    #[serde(default)]
    pub weekly: Option<model::Weekly>,
    /// Who. Over the API, the token's name is recorded with it (and
    /// stands alone when this is left out).
    #[serde(default)]
    pub created_by: String,
    /// Why.
    pub comment: String,
}

fn rfc3339(field: &str, v: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{field}: `{v}` is not an RFC 3339 time: {e}"))
}

impl NewSilence {
    /// The silence to store, made at `now`, or what is wrong with it.
    pub fn build(self, now: i64) -> Result<Silence, String> {
        if self.matchers.is_empty() {
            return Err(
                "matchers: at least one is needed (a silence of everything is refused)".into(),
            );
        }
        parse_matchers(&self.matchers).map_err(|e| format!("matchers: {e}"))?;
        let mode = match self.mode.as_deref() {
            None => SilenceMode::All,
            Some(m) => SilenceMode::parse(m)
                .ok_or_else(|| format!("mode: `{m}` is neither `all` nor `notifications`"))?,
        };
        let starts_at = match &self.starts_at {
            Some(v) => rfc3339("starts_at", v)?,
            None => now,
        };
        let ends_at = match (&self.ends_at, self.duration_secs) {
            (Some(v), None) => rfc3339("ends_at", v)?,
            (None, Some(secs)) => starts_at.saturating_add((secs as i64).saturating_mul(1000)),
            _ => return Err("give exactly one of ends_at and duration_secs".into()),
        };
        if ends_at <= starts_at.max(now) {
            return Err("ends_at must be after starts_at and in the future".into());
        }
        if let Some(w) = &self.weekly {
            w.check()?;
        }
        for (field, v) in [("created_by", &self.created_by), ("comment", &self.comment)] {
            if v.trim().is_empty() {
                return Err(format!("{field} is required"));
            }
        }
        Ok(Silence {
            id: uuid::Uuid::now_v7().to_string(),
            matchers: self.matchers,
            mode,
            starts_at,
            ends_at,
            weekly: self.weekly,
            created_by: self.created_by,
            comment: self.comment,
            created_at: now,
            expired_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2027-01-15.
    const NOW: i64 = 1_800_000_000_000;

    fn ask(json: serde_json::Value) -> Result<Silence, String> {
        serde_json::from_value::<NewSilence>(json)
            .unwrap()
            .build(NOW)
    }

    #[test]
    fn a_silence_needs_matchers_an_end_who_and_why() {
        let ok = ask(serde_json::json!({
            "matchers": ["alertname=\"DiskFull\""], "duration_secs": 60,
            "created_by": "ops", "comment": "disk swap"
        }))
        .unwrap();
        assert_eq!(
            (ok.starts_at, ok.ends_at, ok.mode),
            (NOW, NOW + 60_000, SilenceMode::All)
        );
        for (body, want) in [
            (
                serde_json::json!({"matchers": [], "duration_secs": 60, "created_by": "a", "comment": "b"}),
                "at least one",
            ),
            (
                serde_json::json!({"matchers": ["a~\"x\""], "duration_secs": 60, "created_by": "a", "comment": "b"}),
                "matchers",
            ),
            (
                serde_json::json!({"matchers": ["a=\"x\""], "created_by": "a", "comment": "b"}),
                "exactly one",
            ),
            (
                serde_json::json!({"matchers": ["a=\"x\""], "ends_at": "yesterday", "created_by": "a", "comment": "b"}),
                "RFC 3339",
            ),
            (
                serde_json::json!({"matchers": ["a=\"x\""], "ends_at": "2001-01-01T00:00:00Z", "created_by": "a", "comment": "b"}),
                "in the future",
            ),
            (
                serde_json::json!({"matchers": ["a=\"x\""], "duration_secs": 60, "mode": "some", "created_by": "a", "comment": "b"}),
                "mode",
            ),
            (
                serde_json::json!({"matchers": ["a=\"x\""], "duration_secs": 60, "created_by": " ", "comment": "b"}),
                "created_by",
            ),
        ] {
            let e = ask(body.clone()).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
    }
}
