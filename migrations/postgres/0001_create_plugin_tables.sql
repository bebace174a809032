-- Plugin enablement, per-plugin state and recorded invocation failures.

CREATE TABLE plugins (
    name        TEXT PRIMARY KEY NOT NULL,
    enabled     BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL           -- ms since epoch
);

-- Key/value state a plugin keeps through the `state` capability.
CREATE TABLE plugin_state (
    plugin      TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    expires_at  BIGINT,                    -- ms since epoch; NULL = never
    PRIMARY KEY (plugin, key)
);

-- Sandbox failures: trap, timeout, out-of-fuel, memory, invalid-output, denied.
CREATE TABLE plugin_failures (
    id          BIGSERIAL PRIMARY KEY,
    plugin      TEXT NOT NULL,
    operation   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX plugin_failures_by_plugin ON plugin_failures (plugin, id);
