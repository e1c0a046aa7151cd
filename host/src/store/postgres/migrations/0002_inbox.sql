-- The hosts of a deployment. A host's claims on sessions hold while its
-- lease lasts; it renews the lease while it runs.
CREATE TABLE hosts (
    id          TEXT PRIMARY KEY,
    lease_until TIMESTAMPTZ NOT NULL
);

-- A session: its context, how far its messages are numbered and finished,
-- and which host runs it. Accepting a message updates this row, so the
-- messages of one session are numbered in the order they commit, whichever
-- host accepted them.
CREATE TABLE sessions (
    endpoint   TEXT NOT NULL,
    session_id TEXT NOT NULL,
    context    TEXT NOT NULL DEFAULT '{}',
    updated_at BIGINT NOT NULL,
    -- The number of the last message accepted, and of the last finished.
    accepted   BIGINT NOT NULL DEFAULT 0,
    finished   BIGINT NOT NULL DEFAULT 0,
    -- Its outputs not yet delivered (nor dead): the session's owner
    -- delivers them, in order, so the session stays claimed until then.
    undelivered INTEGER NOT NULL DEFAULT 0,
    -- The host running the session's messages, while its lease lasts.
    owner      TEXT,
    -- One more at every claim: a host that lost its claim (it paused past
    -- its lease, and another took the session) holds an old epoch, and
    -- every write it makes under the claim checks it.
    epoch      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (endpoint, session_id)
);
CREATE INDEX sessions_waiting ON sessions (endpoint) WHERE finished < accepted OR undelivered > 0;

-- The inbox: every accepted message, numbered within its session.
CREATE TABLE messages (
    id           BIGSERIAL PRIMARY KEY,
    endpoint     TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    trace_id     TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    text         TEXT,
    data         TEXT,
    received_at  BIGINT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'done', 'failed')),
    flow         TEXT,
    flow_version TEXT,
    error        TEXT,
    finished_at  BIGINT,
    -- How many of the message's outputs are kept, in the order said: a
    -- turn run again (by this host or another) stores none of them twice.
    outputs_kept INTEGER NOT NULL DEFAULT 0,
    UNIQUE (endpoint, session_id, seq)
);

-- A user's profile at an endpoint, shared by the user's sessions.
CREATE TABLE profiles (
    endpoint   TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    profile    TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (endpoint, user_id)
);

-- The outbox: every output, until and after it was delivered.
CREATE TABLE outputs (
    id              BIGSERIAL PRIMARY KEY,
    message_id      BIGINT NOT NULL REFERENCES messages (id),
    endpoint        TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    webhook_id      TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    next_attempt_at BIGINT
);
-- A session's outputs to deliver, in order: what its owner sends.
CREATE INDEX outputs_pending ON outputs (endpoint, session_id, id) WHERE status = 'pending';
CREATE INDEX outputs_endpoint ON outputs (endpoint, id);

-- Every delivery attempt of every output.
CREATE TABLE delivery_attempts (
    output_id   BIGINT NOT NULL REFERENCES outputs (id),
    started_at  BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status      INTEGER,
    error       TEXT
);
CREATE INDEX delivery_attempts_output ON delivery_attempts (output_id);
