-- The dispatch server's schema: the schema SQLite's migrations 0001-0009 reach (dispatch/store/sqlite/migrations;
-- the comments there explain each part), in PostgreSQL's dialect, with the same tables and columns. Times are
-- Unix nanoseconds (UTC); lists are JSON arrays as text, as in SQLite, so both drivers scan rows alike.
-- From here on a schema change is one migration in each driver's directory.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE pools (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);

CREATE TABLE registration_tokens (
    id         TEXT PRIMARY KEY,
    hash       BYTEA NOT NULL UNIQUE,   -- SHA-256 of the secret; the secret itself is never stored
    pools      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE workers (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    token_hash      BYTEA NOT NULL UNIQUE,
    token_id        TEXT NOT NULL,
    pools           TEXT NOT NULL,
    capabilities    TEXT NOT NULL,
    version         TEXT NOT NULL,
    capacity        BIGINT NOT NULL,
    running         BIGINT NOT NULL DEFAULT 0,
    healthy         BOOLEAN NOT NULL DEFAULT TRUE,
    health_message  TEXT NOT NULL DEFAULT '',
    draining        BOOLEAN NOT NULL DEFAULT FALSE,   -- reported by the worker
    drain_requested BOOLEAN NOT NULL DEFAULT FALSE,   -- asked for by an admin
    registered_at   BIGINT NOT NULL,
    last_heartbeat  BIGINT NOT NULL,
    checks          TEXT,     -- JSON array of api.Check; NULL before the first report
    last_check      BIGINT,
    profiles        TEXT,     -- JSON array; NULL for none
    allow_overrides TEXT      -- JSON api.OverridePolicy; NULL for none
);

CREATE TABLE deployments (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    state       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    finished_at BIGINT
);

CREATE TABLE operations (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,   -- queue order
    id                TEXT NOT NULL UNIQUE,
    deployment_id     TEXT REFERENCES deployments (id),
    step              BIGINT NOT NULL DEFAULT 0,
    name              TEXT NOT NULL DEFAULT '',
    pool              TEXT NOT NULL REFERENCES pools (name),
    syntax            TEXT NOT NULL DEFAULT '',
    image             TEXT NOT NULL DEFAULT '',
    requests          TEXT,                 -- JSON object or NULL
    timeout_seconds   BIGINT NOT NULL DEFAULT 0,
    capabilities      TEXT,                 -- JSON array or NULL when none are required
    body              TEXT NOT NULL,        -- JSON {script, files, variables}; sensitive values masked
    secrets           TEXT,                 -- JSON {name: value} of sensitive values; NULL once ended
    ready             BOOLEAN NOT NULL,     -- false while an earlier deployment step has not succeeded
    state             TEXT NOT NULL,
    exit_code         BIGINT,
    message           TEXT NOT NULL DEFAULT '',
    worker_id         TEXT,
    lease_id          TEXT,
    lease_request_id  TEXT,
    lease_expires_at  BIGINT,
    cancel_requested  BOOLEAN NOT NULL DEFAULT FALSE,
    last_seq          BIGINT NOT NULL DEFAULT 0,   -- highest contiguous log seq stored
    created_at        BIGINT NOT NULL,
    leased_at         BIGINT,
    started_at        BIGINT,
    finished_at       BIGINT,
    target_worker     TEXT,                 -- the only worker that may claim it; NULL for the rest
    pod_token_hash    TEXT,                 -- hex SHA-256 of the pod token; erased when the operation ends
    sealing_key       BYTEA,                -- erased when the operation ends
    pod_eos_seq       BIGINT,
    pod_exit_code     BIGINT,
    log_limit         BIGINT NOT NULL DEFAULT 0,
    log_bytes         BIGINT NOT NULL DEFAULT 0,
    log_head_seq      BIGINT,
    log_dropped_lines BIGINT NOT NULL DEFAULT 0,
    log_dropped_bytes BIGINT NOT NULL DEFAULT 0,
    profile           TEXT,
    overrides         TEXT,
    usage             TEXT                  -- JSON api.Usage; NULL when not measured
);

-- The queue: claimable operations per pool in order; targeted operations are walked in their own index.
CREATE INDEX operations_queue ON operations (pool, seq) WHERE state = 'queued' AND ready AND target_worker IS NULL;
CREATE INDEX operations_targeted ON operations (target_worker, seq) WHERE state = 'queued' AND target_worker IS NOT NULL;
-- Live leases by worker (and the lease request that created them); the expiry sweep reads it too.
CREATE INDEX operations_worker ON operations (worker_id, lease_request_id) WHERE state IN ('leased', 'running');
CREATE INDEX operations_deployment ON operations (deployment_id, step) WHERE deployment_id IS NOT NULL;
CREATE INDEX operations_finished ON operations (finished_at) WHERE finished_at IS NOT NULL AND deployment_id IS NULL;
CREATE UNIQUE INDEX operations_pod_token ON operations (pod_token_hash) WHERE pod_token_hash IS NOT NULL;
CREATE INDEX operations_usage ON operations (pool, finished_at) WHERE usage IS NOT NULL;
CREATE INDEX deployments_finished ON deployments (finished_at) WHERE finished_at IS NOT NULL;

-- Logs in chunks: a chunk holds n lines whose positions are pos-n+1 .. pos (see SQLite's 0002). Unlike
-- SQLite's, positions count per operation (the primary key is (op_seq, pos)): they are given out under the
-- operation's row lock, so one operation's positions commit in order whatever other servers append
-- (postgres/logs.go). A follower follows one operation.
CREATE TABLE log_chunks (
    op_seq    BIGINT NOT NULL,
    pos       BIGINT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq  BIGINT NOT NULL,
    n         BIGINT NOT NULL,
    lines     BYTEA NOT NULL,
    PRIMARY KEY (op_seq, pos)
);
CREATE UNIQUE INDEX log_chunks_seq ON log_chunks (op_seq, first_seq) WHERE first_seq > 0;

CREATE TABLE charts (
    version     TEXT PRIMARY KEY,
    sha256      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    data        BYTEA NOT NULL,
    uploaded_at BIGINT NOT NULL
);

CREATE TABLE packages (
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    file_name  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX packages_sha256 ON packages (sha256);

CREATE TABLE operation_packages (
    op_seq  BIGINT NOT NULL REFERENCES operations (seq) ON DELETE CASCADE,
    idx     BIGINT NOT NULL,
    name    TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (op_seq, idx),
    FOREIGN KEY (name, version) REFERENCES packages (name, version)
);
CREATE INDEX operation_packages_package ON operation_packages (name, version);
