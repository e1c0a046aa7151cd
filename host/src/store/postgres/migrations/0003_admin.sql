-- Endpoints whose receiver answered 410 Gone: delivery stops, on every
-- host, until an operator resumes it.
CREATE TABLE disabled_endpoints (
    endpoint TEXT PRIMARY KEY,
    reason   TEXT NOT NULL,
    since    BIGINT NOT NULL
);

-- Attempts in the order they were recorded, for the admin API.
ALTER TABLE delivery_attempts ADD COLUMN id BIGSERIAL PRIMARY KEY;
