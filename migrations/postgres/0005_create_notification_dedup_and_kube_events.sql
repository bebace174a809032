-- Notification deduplication, and Kubernetes Warning events as ingested.

-- One row per (notifier, dedup key): when a notification last went out,
-- and how many requests were held back since (sent with the next one).
CREATE TABLE notification_dedup (
    channel      TEXT NOT NULL,
    dedup_key    TEXT NOT NULL,
    last_sent_at BIGINT NOT NULL,        -- ms, host clock
    seen         BIGINT NOT NULL,        -- requests with this key, sent or not
    suppressed   BIGINT NOT NULL,        -- held back since last_sent_at
    PRIMARY KEY (channel, dedup_key)
);

-- Kubernetes Warning events, one row per dedup key
-- md5(cluster + kind + namespace + name + reason); a repeat counts up.
CREATE TABLE kube_events (
    dedup_key      TEXT PRIMARY KEY NOT NULL,
    cluster        TEXT NOT NULL,
    kind           TEXT NOT NULL,
    namespace      TEXT NOT NULL,
    name           TEXT NOT NULL,
    reason         TEXT NOT NULL,
    message        TEXT NOT NULL,
    occurrences    BIGINT NOT NULL,      -- events received with this key
    reported_count BIGINT NOT NULL,      -- Kubernetes' own count on the latest one
    first_seen     BIGINT NOT NULL,      -- ms, Kubernetes' firstTimestamp of the first one
    last_seen      BIGINT NOT NULL,      -- ms, lastTimestamp of the latest one
    updated_at     BIGINT NOT NULL
);
