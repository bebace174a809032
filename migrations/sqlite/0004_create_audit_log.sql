-- Capability calls worth keeping: every container mutation a plugin made
-- or was refused (denials included), newest last.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    plugin     TEXT NOT NULL,
    capability TEXT NOT NULL,
    operation  TEXT NOT NULL,
    target     TEXT NOT NULL,
    allowed    INTEGER NOT NULL,   -- 0 or 1
    detail     TEXT NOT NULL
);
CREATE INDEX audit_log_plugin ON audit_log (plugin, id);
