//! Silences and maintenance windows: Alertmanager-syntax matchers, a start
//! and an end, optionally only inside a weekly window (UTC), created with
//! who and why.

use serde::{Deserialize, Serialize};

/// What a silence mutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SilenceMode {
    /// A matching firing alert is stored and counted, and handed to no
    /// rule: no incident, no action, no notification.
    All,
    /// Rules run and actions with them; notifications are muted.
    Notifications,
}

impl SilenceMode {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            SilenceMode::All => "all",
            SilenceMode::Notifications => "notifications",
        }
    }

    /// The mode named `s`.
    pub fn parse(s: &str) -> Option<SilenceMode> {
        match s {
            "all" => Some(SilenceMode::All),
            "notifications" => Some(SilenceMode::Notifications),
            _ => None,
        }
    }
}

/// A recurring weekly window, in UTC: active on `days` from `from` to `to`
/// (`HH:MM`); a window whose `to` is before its `from` runs past midnight
/// into the next day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Weekly {
    /// `mon` … `sun`.
    pub days: Vec<String>,
    /// Start, `HH:MM`.
    pub from: String,
    /// End, `HH:MM`.
    pub to: String,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_MS: i64 = 86_400_000;

fn minutes(hhmm: &str) -> Option<i64> {
    let (h, m) = hhmm.split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m) && hhmm.len() == 5).then_some(h * 60 + m)
}

impl Weekly {
    /// Why it is not a window, if it is not one.
    pub fn check(&self) -> Result<(), String> {
        if self.days.is_empty() {
            return Err("weekly.days is empty".into());
        }
        if let Some(d) = self.days.iter().find(|d| !DAYS.contains(&d.as_str())) {
            return Err(format!("weekly.days: `{d}` is not one of {DAYS:?}"));
        }
        for (field, v) in [("from", &self.from), ("to", &self.to)] {
            if minutes(v).is_none() {
                return Err(format!("weekly.{field}: `{v}` is not HH:MM"));
            }
        }
        if self.from == self.to {
            return Err("weekly.from and weekly.to are the same time".into());
        }
        Ok(())
    }

    /// Whether `at` (ms since epoch) falls inside the window.
    pub fn contains(&self, at: i64) -> bool {
        let (Some(from), Some(to)) = (minutes(&self.from), minutes(&self.to)) else {
            return false;
        };
        let day = at.div_euclid(DAY_MS);
        let minute = at.rem_euclid(DAY_MS) / 60_000;
        // 1970-01-01 was a Thursday (index 3 from Monday).
        let weekday = |day: i64| DAYS[(day + 3).rem_euclid(7) as usize];
        let on = |day: i64| self.days.iter().any(|d| d == weekday(day));
        if from < to {
            on(day) && (from..to).contains(&minute)
        } else {
            // Past midnight: the evening part today, the morning part
            // belongs to yesterday's window.
            (on(day) && minute >= from) || (on(day - 1) && minute < to)
        }
    }
}

/// A silence as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Silence {
    /// UUIDv7.
    pub id: String,
    /// Alertmanager matchers; all must match.
    pub matchers: Vec<String>,
    /// What it mutes.
    pub mode: SilenceMode,
    /// From (ms since epoch).
    pub starts_at: i64,
    /// Until (ms since epoch).
    pub ends_at: i64,
    /// Only inside this weekly window, if set.
    pub weekly: Option<Weekly>,
    /// Who made it.
    pub created_by: String,
    /// Why.
    pub comment: String,
    /// When it was made (ms).
    pub created_at: i64,
    /// When it was ended early, if it was.
    pub expired_at: Option<i64>,
}

impl Silence {
    /// Whether it mutes at `now` (its matchers aside).
    pub fn active_at(&self, now: i64) -> bool {
        self.expired_at.is_none()
            && self.starts_at <= now
            && now < self.ends_at
            && self.weekly.as_ref().is_none_or(|w| w.contains(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-30 was a Monday.
    const MONDAY: i64 = 1_795_996_800_000;
    const HOUR: i64 = 3_600_000;

    fn window(days: &[&str], from: &str, to: &str) -> Weekly {
        Weekly {
            days: days.iter().map(|d| d.to_string()).collect(),
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn weekly_windows_in_utc_including_past_midnight() {
        let w = window(&["mon", "wed"], "22:00", "02:00");
        assert!(w.check().is_ok());
        assert!(!w.contains(MONDAY + 21 * HOUR));
        assert!(w.contains(MONDAY + 23 * HOUR));
        assert!(
            w.contains(MONDAY + 25 * HOUR),
            "Tuesday 01:00 is Monday's window"
        );
        assert!(!w.contains(MONDAY + 26 * HOUR));
        assert!(
            !w.contains(MONDAY + 24 * HOUR + 23 * HOUR),
            "Tuesday night is not in it"
        );
        let day = window(&["sun"], "09:00", "17:00");
        assert!(day.contains(MONDAY - 12 * HOUR), "Sunday noon");
        assert!(!day.contains(MONDAY + 12 * HOUR));
    }

    #[test]
    fn bad_windows_are_named() {
        assert!(window(&[], "01:00", "02:00").check().is_err());
        assert!(window(&["monday"], "01:00", "02:00").check().is_err());
        assert!(window(&["mon"], "1:00", "02:00").check().is_err());
        assert!(window(&["mon"], "24:00", "02:00").check().is_err());
        assert!(window(&["mon"], "02:00", "02:00").check().is_err());
    }

    #[test]
    fn active_between_start_and_end_unless_expired() {
        let mut s = Silence {
            id: "s".into(),
            matchers: vec![],
            mode: SilenceMode::All,
            starts_at: 100,
            ends_at: 200,
            weekly: None,
            created_by: "ops".into(),
            comment: "maintenance".into(),
            created_at: 0,
            expired_at: None,
        };
        assert!(!s.active_at(99) && s.active_at(100) && !s.active_at(200));
        s.expired_at = Some(150);
        assert!(!s.active_at(120));
    }
}
