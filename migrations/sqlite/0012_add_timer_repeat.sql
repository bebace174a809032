-- A repeating timer (a scheduled rule's): when it fires, the row is moved
-- on by repeat_ms in the same transaction instead of deleted, so there is
-- always a next call on record, across restarts.

ALTER TABLE timers ADD COLUMN repeat_ms INTEGER;
