-- How many requests were held back before the last one that went out:
-- kept when that one is sent, so deciding "send or hold back" and
-- reporting the count is one statement.

ALTER TABLE notification_dedup ADD COLUMN sent_suppressed BIGINT NOT NULL DEFAULT 0;
