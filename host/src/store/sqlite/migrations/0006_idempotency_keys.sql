-- The Idempotency-Key of each message that came with one, remembered until
-- it expires: a caller's retry of the same request is answered as the first
-- was, and runs nothing again.
CREATE TABLE idempotency_keys (
    endpoint    TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    trace_id    TEXT    NOT NULL,
    message_id  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (endpoint, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
