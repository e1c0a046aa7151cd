-- Endpoints' generated URL tokens: one per endpoint, the same on every host.
CREATE TABLE endpoints (
    name       TEXT PRIMARY KEY,
    url_token  TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- API keys: their SHA-256, never the key.
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    endpoint   TEXT NOT NULL,
    name       TEXT,
    prefix     TEXT NOT NULL,
    hash       BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_keys_endpoint ON api_keys (endpoint);
