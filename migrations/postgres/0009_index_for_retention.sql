-- Indexes the pruning task (store/retention.rs) deletes by, so a prune
-- reads only what it deletes; the two on incident_id also serve an
-- incident's action and notification lists.

CREATE INDEX inbox_events_by_time ON inbox_events (processed_at);
CREATE INDEX alerts_resolved_by_last_seen ON alerts (last_seen) WHERE status = 'resolved';
CREATE INDEX incidents_closed ON incidents (closed_at) WHERE closed_at IS NOT NULL;
CREATE INDEX actions_by_incident ON actions (incident_id);
CREATE INDEX notifications_by_incident ON notifications (incident_id);
CREATE INDEX kube_events_by_update ON kube_events (updated_at);
