-- Where each pulled source stopped: a Kubernetes watch's resourceVersion,
-- written in the transaction that stores the events read up to it, so a
-- restart resumes there without missing or repeating an event.

CREATE TABLE source_checkpoints (
    source      TEXT PRIMARY KEY,    -- e.g. kubernetes/<cluster>
    position    TEXT NOT NULL,       -- opaque to the store
    updated_at  INTEGER NOT NULL        -- ms
);
