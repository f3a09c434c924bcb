-- Runs of the server: lets a restart close the sessions a crash left open,
-- at the last moment the crashed run was known to be alive.
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    alive REAL NOT NULL,
    stopped REAL
);

-- One row per publish or view, opened when it starts and closed when it ends.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL CHECK (kind IN ('publish', 'view')),
    stream TEXT NOT NULL,
    protocol TEXT NOT NULL,
    peer TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    bytes INTEGER NOT NULL DEFAULT 0,
    end_reason TEXT
);
CREATE INDEX sessions_stream_started ON sessions (stream, started);
CREATE INDEX sessions_open ON sessions (ended) WHERE ended IS NULL;

-- Everything else worth keeping: rejections, forward failures, skips.
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    stream TEXT NOT NULL,
    protocol TEXT NOT NULL,
    peer TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_stream_at ON events (stream, at);
