-- Operators acknowledge incidents (who, when); an acknowledgement holds
-- until the incident's status next changes, and mutes repeat
-- notifications about it meanwhile.
ALTER TABLE incidents ADD COLUMN acknowledged_by TEXT;
ALTER TABLE incidents ADD COLUMN acknowledged_at INTEGER;

-- Which build of a rule made each decision: describe's version and the
-- component's digest (NULL for decisions logged before this column).
ALTER TABLE decisions_log ADD COLUMN rule_version TEXT;
ALTER TABLE decisions_log ADD COLUMN rule_digest TEXT;

-- The API's lists page newest first by id (UUIDv7 or sequence), with
-- filters on these columns.
CREATE INDEX incidents_by_service ON incidents (service, id);
CREATE INDEX incidents_by_status ON incidents (status, id);
CREATE INDEX decisions_log_by_rule ON decisions_log (rule, id);
CREATE INDEX decisions_log_by_incident ON decisions_log (incident_id, id);
CREATE INDEX alerts_by_first_seen ON alerts (first_seen);
