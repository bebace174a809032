-- Scale-out: which instance processed each event, and the outbox rows a
-- relay has yet to publish to Kafka (embedded, nothing reads that index).

ALTER TABLE inbox_events ADD COLUMN processed_by TEXT;

CREATE INDEX outbox_events_unpublished ON outbox_events (seq) WHERE published_at IS NULL;
