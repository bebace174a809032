-- Capability calls worth keeping: every container mutation a plugin made
-- or was refused (denials included), newest last.
CREATE TABLE audit_log (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    plugin     TEXT NOT NULL,
    capability TEXT NOT NULL,
    operation  TEXT NOT NULL,
    target     TEXT NOT NULL,
    allowed    BIGINT  NOT NULL,   -- 0 or 1
    detail     TEXT NOT NULL
);
CREATE INDEX audit_log_plugin ON audit_log (plugin, id);
