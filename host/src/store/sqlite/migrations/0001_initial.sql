-- The inbox: every accepted message, until and after it ran.
CREATE TABLE messages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Random ids are not indexed: an insert into an index on random keys
    -- dirties a random page, and every dirty page is a WAL frame to
    -- write. Nothing looks messages or outputs up by them.
    trace_id     TEXT NOT NULL,
    endpoint     TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    text         TEXT,
    data         TEXT,
    received_at  INTEGER NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'done', 'failed')),
    flow         TEXT,
    flow_version TEXT,
    error        TEXT,
    finished_at  INTEGER
);
CREATE INDEX messages_pending ON messages (id) WHERE status = 'pending';

CREATE TABLE sessions (
    endpoint   TEXT NOT NULL,
    session_id TEXT NOT NULL,
    context    TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (endpoint, session_id)
) WITHOUT ROWID;

CREATE TABLE profiles (
    endpoint   TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    profile    TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (endpoint, user_id)
) WITHOUT ROWID;

-- The outbox: every output, until and after it was delivered.
CREATE TABLE outputs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   INTEGER NOT NULL REFERENCES messages (id),
    endpoint     TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    webhook_id   TEXT NOT NULL,
    body         TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER
);
CREATE INDEX outputs_pending ON outputs (id) WHERE status = 'pending';
CREATE INDEX outputs_endpoint ON outputs (endpoint, id);

CREATE TABLE delivery_attempts (
    output_id   INTEGER NOT NULL REFERENCES outputs (id),
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    status      INTEGER,
    error       TEXT
);
CREATE INDEX delivery_attempts_output ON delivery_attempts (output_id);

CREATE TABLE endpoints (
    name       TEXT PRIMARY KEY,
    url_token  TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    endpoint   TEXT NOT NULL,
    name       TEXT,
    prefix     TEXT NOT NULL,
    hash       BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX api_keys_endpoint ON api_keys (endpoint);

-- Endpoints whose receiver answered 410 Gone: delivery stops until an
-- operator resumes it.
CREATE TABLE disabled_endpoints (
    endpoint TEXT PRIMARY KEY,
    reason   TEXT NOT NULL,
    since    INTEGER NOT NULL
);
