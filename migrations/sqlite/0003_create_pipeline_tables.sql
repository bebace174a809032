-- The pipeline: consumer offsets into the outbox log, the inbox that makes
-- redelivery a no-op, the decisions rules made, incidents and their
-- timelines, the action and notification work queues, and dead letters.
-- Times are ms since the Unix epoch; JSON is stored as text.

-- Embedded transport: how far each stage has read the outbox.
CREATE TABLE consumer_offsets (
    consumer    TEXT PRIMARY KEY NOT NULL,
    seq         INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- One row per (stage, event) processed, written in the stage's transaction.
CREATE TABLE inbox_events (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

-- Every rule invocation and what it decided (or how it failed).
CREATE TABLE decisions_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL,
    event_kind  TEXT NOT NULL,
    rule        TEXT NOT NULL,
    trace_id    TEXT NOT NULL,
    incident_id TEXT,
    decision    TEXT,                       -- JSON, NULL when the rule failed
    error       TEXT,
    at          INTEGER NOT NULL
);
CREATE INDEX decisions_log_by_event ON decisions_log (event_id);

CREATE TABLE incidents (
    id               TEXT PRIMARY KEY NOT NULL,   -- UUIDv7
    dedup_key        TEXT NOT NULL,
    title            TEXT NOT NULL,
    service          TEXT NOT NULL,
    severity         TEXT NOT NULL,
    status           TEXT NOT NULL,               -- open | mitigating | resolved | failed
    summary          TEXT NOT NULL,
    rule             TEXT NOT NULL,
    trace_id         TEXT NOT NULL,
    opened_at        INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    closed_at        INTEGER,
    last_notified_at INTEGER
);
-- At most one active incident per dedup key.
CREATE UNIQUE INDEX incidents_one_active ON incidents (dedup_key)
    WHERE status IN ('open', 'mitigating');

-- The timeline: transitions, linked alerts, actions, notifications, signals.
CREATE TABLE incident_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,       -- opened | transition | alert | action | notification | signal
    from_status TEXT,
    to_status   TEXT,
    cause       TEXT NOT NULL,       -- what caused it, human readable
    event_id    TEXT NOT NULL,       -- the event that caused it
    ref_id      TEXT                 -- alert id, action id, notification id
);
CREATE INDEX incident_events_by_incident ON incident_events (incident_id, id);

-- Alerts that belong to an incident.
CREATE TABLE incident_alerts (
    incident_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    starts_at   INTEGER NOT NULL,
    PRIMARY KEY (incident_id, fingerprint, starts_at)
);
CREATE INDEX incident_alerts_by_alert ON incident_alerts (fingerprint, starts_at);

-- action_exec: every requested action, recorded before it runs; the action
-- stage's work queue. `status`: pending | running | completed | failed.
CREATE TABLE actions (
    id              TEXT PRIMARY KEY NOT NULL,   -- action_id
    incident_id     TEXT,
    rule            TEXT NOT NULL,
    plugin          TEXT NOT NULL,
    target          TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    result          TEXT,                        -- JSON
    request         TEXT NOT NULL,               -- the action.requested event, JSON
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX actions_due ON actions (status, next_attempt_at);

-- Every requested notification; the notification stage's work queue.
CREATE TABLE notifications (
    id              TEXT PRIMARY KEY NOT NULL,
    incident_id     TEXT,
    rule            TEXT NOT NULL,
    plugin          TEXT NOT NULL,
    target          TEXT NOT NULL,               -- dedup key or title
    status          TEXT NOT NULL,               -- pending | running | delivered | failed
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    result          TEXT,
    request         TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX notifications_due ON notifications (status, next_attempt_at);

-- Events a stage gave up on, with why; replayable through the admin API.
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    error       TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    replayed_at INTEGER
);
