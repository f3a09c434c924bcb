-- Where each webhook's deliveries stand: the id of the last event its
-- receiver acknowledged (or that its filter passed over).  Deliveries resume
-- from here after a restart or a crash, so a receiver gets every event at
-- least once, in the log's order.
CREATE TABLE webhook_cursors (
    name TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
