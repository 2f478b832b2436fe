-- The dispatch server's schema. Times are Unix nanoseconds (UTC); lists are JSON arrays.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE pools (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);

CREATE TABLE registration_tokens (
    id         TEXT PRIMARY KEY,
    hash       BLOB NOT NULL UNIQUE,   -- SHA-256 of the secret; the secret itself is never stored
    pools      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE workers (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    token_hash      BLOB NOT NULL UNIQUE,
    token_id        TEXT NOT NULL,
    pools           TEXT NOT NULL,
    capabilities    TEXT NOT NULL,
    version         TEXT NOT NULL,
    capacity        INTEGER NOT NULL,
    running         INTEGER NOT NULL DEFAULT 0,
    healthy         INTEGER NOT NULL DEFAULT 1,
    health_message  TEXT NOT NULL DEFAULT '',
    draining        INTEGER NOT NULL DEFAULT 0,   -- reported by the worker
    drain_requested INTEGER NOT NULL DEFAULT 0,   -- asked for by an admin
    registered_at   INTEGER NOT NULL,
    last_heartbeat  INTEGER NOT NULL
);

CREATE TABLE deployments (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    state       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER
);

CREATE TABLE operations (
    seq              INTEGER PRIMARY KEY,            -- queue order
    id               TEXT NOT NULL UNIQUE,
    deployment_id    TEXT REFERENCES deployments(id),
    step             INTEGER NOT NULL DEFAULT 0,
    name             TEXT NOT NULL DEFAULT '',
    pool             TEXT NOT NULL REFERENCES pools(name),
    syntax           TEXT NOT NULL DEFAULT '',
    image            TEXT NOT NULL DEFAULT '',
    requests         TEXT,                           -- JSON object or NULL
    timeout_seconds  INTEGER NOT NULL DEFAULT 0,
    capabilities     TEXT,                           -- JSON array or NULL when none are required
    body             TEXT NOT NULL,                  -- JSON {script, files, variables}; sensitive values masked
    secrets          TEXT,                           -- JSON {name: value} of sensitive values; NULL once ended
    ready            INTEGER NOT NULL,               -- 0 while an earlier deployment step has not succeeded
    state            TEXT NOT NULL,
    exit_code        INTEGER,
    message          TEXT NOT NULL DEFAULT '',
    worker_id        TEXT,
    lease_id         TEXT,
    lease_request_id TEXT,
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    last_seq         INTEGER NOT NULL DEFAULT 0,     -- highest contiguous log seq stored
    created_at       INTEGER NOT NULL,
    leased_at        INTEGER,
    started_at       INTEGER,
    finished_at      INTEGER
);

-- The queue: claimable operations per pool in order.
CREATE INDEX operations_queue ON operations (pool, seq) WHERE state = 'queued' AND ready = 1;
-- Live leases by worker (and the lease request that created them, for idempotent retries). The expiry sweep
-- reads this index too: it holds only live leases, so no index on the expiry (which every heartbeat moves).
CREATE INDEX operations_worker ON operations (worker_id, lease_request_id) WHERE state IN ('leased', 'running');
CREATE INDEX operations_deployment ON operations (deployment_id, step) WHERE deployment_id IS NOT NULL;

CREATE TABLE log_lines (
    pos    INTEGER PRIMARY KEY,   -- the follow cursor: increases in commit order (one writer)
    op_seq INTEGER NOT NULL,
    seq    INTEGER NOT NULL,      -- the runner's sequence; 0 for the worker's own notes
    time   INTEGER NOT NULL,
    stream TEXT NOT NULL,
    text   TEXT NOT NULL
);
CREATE UNIQUE INDEX log_lines_seq ON log_lines (op_seq, seq) WHERE seq > 0;
CREATE INDEX log_lines_op ON log_lines (op_seq, pos);

CREATE TABLE charts (
    version     TEXT PRIMARY KEY,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    data        BLOB NOT NULL,
    uploaded_at INTEGER NOT NULL
);
