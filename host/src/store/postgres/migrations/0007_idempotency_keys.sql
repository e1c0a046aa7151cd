-- The Idempotency-Key of each message that came with one, remembered until
-- it expires (by the database's clock): a caller's retry of the same
-- request, at any host, is answered as the first was and runs nothing again.
CREATE TABLE idempotency_keys (
    endpoint    TEXT   NOT NULL,
    key         TEXT   NOT NULL,
    fingerprint TEXT   NOT NULL,
    trace_id    TEXT   NOT NULL,
    message_id  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (endpoint, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
