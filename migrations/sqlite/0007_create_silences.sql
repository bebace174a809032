-- Silences and maintenance windows: while one is active, matching alerts
-- are stored and counted but handed to no rule (mode 'all'), or have their
-- notifications muted while remediation runs (mode 'notifications').

CREATE TABLE silences (
    id          TEXT PRIMARY KEY NOT NULL,   -- UUIDv7
    matchers    TEXT NOT NULL,               -- JSON ["alertname=\"X\"", ...]
    mode        TEXT NOT NULL,               -- all | notifications
    starts_at   INTEGER NOT NULL,             -- ms since epoch
    ends_at     INTEGER NOT NULL,
    weekly      TEXT,                        -- JSON {"days": [...], "from": "HH:MM", "to": "HH:MM"} (UTC), or NULL
    created_by  TEXT NOT NULL,
    comment     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expired_at  INTEGER                       -- ended early through the API or CLI
);
CREATE INDEX silences_by_end ON silences (ends_at);
