-- When a retried output is next due, in milliseconds since the Unix
-- epoch (NULL: at once), so that a restart keeps the retry schedule
-- instead of retrying every output at once.
ALTER TABLE outputs ADD COLUMN next_attempt_at INTEGER;
