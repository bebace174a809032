-- Alerts as ingested, and the outbox: the events announced in the same
-- transaction as the state change. Embedded, the outbox is also the log
-- (its `seq` is the offset stages consume from).

CREATE TABLE alerts (
    fingerprint   TEXT NOT NULL,
    starts_at     BIGINT NOT NULL,          -- ms since epoch; with fingerprint, one alert instance
    name          TEXT NOT NULL,
    status        TEXT NOT NULL,             -- firing | resolved
    severity      TEXT,
    labels        TEXT NOT NULL,             -- JSON [[k, v], ...]
    annotations   TEXT NOT NULL,             -- JSON [[k, v], ...]
    ends_at       BIGINT,
    generator_url TEXT,
    group_key     TEXT NOT NULL,
    first_seen    BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL,
    occurrences   BIGINT NOT NULL,          -- deliveries seen, retries and HA duplicates included
    PRIMARY KEY (fingerprint, starts_at)
);

CREATE TABLE outbox_events (
    seq           BIGSERIAL PRIMARY KEY,
    event_id      TEXT NOT NULL UNIQUE,      -- UUIDv7
    kind          TEXT NOT NULL,
    event_key     TEXT NOT NULL,             -- partition key
    payload       TEXT NOT NULL,             -- the event envelope, JSON
    created_at    BIGINT NOT NULL,
    published_at  BIGINT                    -- set by a relay once a transport acknowledged it
);
CREATE INDEX outbox_events_by_kind ON outbox_events (kind, seq);
