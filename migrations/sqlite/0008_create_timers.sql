-- Durable timers rules set: each fires once as a `timer.fired` event (the
-- row is deleted in the transaction that appends it); a newer timer with
-- the same (plugin, key) replaces the older.

CREATE TABLE timers (
    plugin      TEXT NOT NULL,
    key         TEXT NOT NULL,
    id          TEXT NOT NULL,       -- the event id it fires as
    due_at      INTEGER NOT NULL,      -- ms, host clock
    event       TEXT NOT NULL,       -- the timer.fired envelope, JSON
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (plugin, key)
);
CREATE INDEX timers_due ON timers (due_at);
