-- The history becomes an append-only log: every state change is one row of
-- `events`, in order (its id), never updated; sessions, totals, shows and
-- viewers over time are projections of it that `ghostream history rebuild`
-- can make again from the log alone.
--
-- Version 1 kept sessions as rows opened and later updated, and the other
-- events (refusals, forwards) apart: each session becomes its start and end
-- events, each run its start and end, and a publish that no other publish of
-- its stream followed within the default 10 s grace ends its show.  Ends sort
-- before starts at the same instant (a hand-over is not a peak), as version 1
-- counted.  The projections are filled from the log by the server (or
-- `history rebuild`) because the table `meta` says they are stale.
CREATE TABLE log (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    run_id INTEGER,
    stream TEXT NOT NULL DEFAULT '',
    protocol TEXT NOT NULL DEFAULT '',
    peer TEXT NOT NULL DEFAULT '',
    -- The session the event opens, measures or closes; a viewer's anonymised id.
    session TEXT,
    viewer TEXT,
    bytes INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);

INSERT INTO log (at, kind, run_id, stream, protocol, peer, session, bytes, reason, detail)
SELECT at, kind, run_id, stream, protocol, peer, session, bytes, reason, detail FROM (
    SELECT started AS at, 0 AS rank, 0 AS seq, 'run started' AS kind, id AS run_id,
           '' AS stream, '' AS protocol, '' AS peer, NULL AS session, 0 AS bytes,
           '' AS reason, '{}' AS detail
    FROM runs
    UNION ALL
    SELECT ended, 1, 0,
           CASE WHEN kind = 'view' THEN 'viewer left'
                WHEN stream LIKE '%@%' THEN 'variant stopped'
                ELSE 'publish ended' END,
           run_id, stream, protocol, peer, id, bytes, coalesce(end_reason, ''), '{}'
    FROM sessions WHERE ended IS NOT NULL
    UNION ALL
    SELECT started, 2, 0,
           CASE WHEN kind = 'view' THEN 'viewer joined'
                WHEN stream LIKE '%@%' THEN 'variant started'
                ELSE 'publish started' END,
           run_id, stream, protocol, peer, id, 0, '', '{}'
    FROM sessions
    UNION ALL
    SELECT at, 2, id, kind, NULL, stream, protocol, peer, NULL,
           coalesce(json_extract(detail, '$.bytes'), 0), reason, detail
    FROM events
    UNION ALL
    SELECT ended, 3, 0, 'stream ended', run_id, stream, '', '', NULL, 0, '', '{}'
    FROM sessions AS s
    WHERE kind = 'publish' AND ended IS NOT NULL AND stream NOT LIKE '%@%'
      AND NOT EXISTS (
          SELECT 1 FROM sessions AS n
          WHERE n.kind = 'publish' AND n.stream = s.stream
            AND n.started >= s.ended AND n.started <= s.ended + 10
      )
    UNION ALL
    SELECT stopped, 4, 0, 'run ended', id, '', '', '', NULL, 0, '', '{}'
    FROM runs WHERE stopped IS NOT NULL
)
ORDER BY at, rank, seq;

DROP TABLE events;
DROP TABLE sessions;
ALTER TABLE log RENAME TO events;
CREATE INDEX events_stream_at ON events (stream, at);
CREATE INDEX events_kind_at ON events (kind, at);

-- Settings of this history: the salt of anonymised viewer ids, whether the
-- projections must be made again from the log.
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO meta VALUES ('projections', 'stale');

-- Projections (rebuildable from `events`).
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    run_id INTEGER,
    kind TEXT NOT NULL CHECK (kind IN ('publish', 'view')),
    stream TEXT NOT NULL,
    protocol TEXT NOT NULL,
    peer TEXT NOT NULL,
    viewer TEXT,
    show_id INTEGER,
    started REAL NOT NULL,
    ended REAL,
    bytes INTEGER NOT NULL DEFAULT 0,
    end_reason TEXT
);
CREATE INDEX sessions_stream_started ON sessions (stream, started);
CREATE INDEX sessions_open ON sessions (ended) WHERE ended IS NULL;
CREATE INDEX sessions_show ON sessions (show_id);

-- Per stream, its variants included.
CREATE TABLE stream_totals (
    stream TEXT PRIMARY KEY,
    views INTEGER NOT NULL DEFAULT 0,
    unique_viewers INTEGER NOT NULL DEFAULT 0,
    peak_viewers INTEGER NOT NULL DEFAULT 0,
    peak_at REAL,
    watch_seconds REAL NOT NULL DEFAULT 0,
    bytes_in INTEGER NOT NULL DEFAULT 0,
    bytes_out INTEGER NOT NULL DEFAULT 0,
    publishes INTEGER NOT NULL DEFAULT 0,
    last_publish REAL
);
CREATE TABLE stream_viewers (
    stream TEXT NOT NULL,
    viewer TEXT NOT NULL,
    PRIMARY KEY (stream, viewer)
) WITHOUT ROWID;

-- Concurrent viewers of a stream over a protocol: the most in each minute
-- that saw a change, and how many were left at its end.
CREATE TABLE viewers_per_minute (
    stream TEXT NOT NULL,
    minute INTEGER NOT NULL,
    protocol TEXT NOT NULL,
    peak INTEGER NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (stream, minute, protocol)
) WITHOUT ROWID;

-- A show: one publish of a stream with its reconnects within the grace;
-- its id is that of the event that started it.
CREATE TABLE shows (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    publishes INTEGER NOT NULL DEFAULT 0,
    peak_viewers INTEGER NOT NULL DEFAULT 0,
    peak_at REAL,
    views INTEGER NOT NULL DEFAULT 0,
    unique_viewers INTEGER NOT NULL DEFAULT 0,
    watch_seconds REAL NOT NULL DEFAULT 0,
    bytes_in INTEGER NOT NULL DEFAULT 0,
    bytes_out INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX shows_stream_started ON shows (stream, started);
CREATE TABLE show_viewers (
    show_id INTEGER NOT NULL,
    viewer TEXT NOT NULL,
    PRIMARY KEY (show_id, viewer)
) WITHOUT ROWID;

-- The last word on each forward target of a stream.
CREATE TABLE forwards (
    stream TEXT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    at REAL NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (stream, target)
) WITHOUT ROWID;
