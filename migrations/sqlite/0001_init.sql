-- Times are integer milliseconds since the Unix epoch; ids are UUID text. Both travel
-- unchanged between SQLite and Postgres.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE vendors (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    key_hash   TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE demos (
    id         TEXT PRIMARY KEY,
    vendor_id  TEXT NOT NULL REFERENCES vendors (id),
    slug       TEXT NOT NULL,
    spec       TEXT NOT NULL,             -- the checked manifest, as JSON
    enabled    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted_at INTEGER
);
CREATE UNIQUE INDEX demos_vendor_slug ON demos (vendor_id, slug) WHERE deleted_at IS NULL;

CREATE TABLE sandboxes (
    id              TEXT PRIMARY KEY,
    demo_id         TEXT NOT NULL REFERENCES demos (id),
    vendor_id       TEXT NOT NULL REFERENCES vendors (id),
    token_hash      TEXT NOT NULL,
    status          TEXT NOT NULL,
    spec            TEXT NOT NULL,        -- the demo as it was when the sandbox was made
    created_at      INTEGER NOT NULL,
    ready_at        INTEGER,
    expires_at      INTEGER NOT NULL,     -- the deadline: lives here only, never in a label
    ended_at        INTEGER,
    end_reason      TEXT,
    data_deleted_at INTEGER,
    addr_slot       INTEGER,              -- the sandbox's address on the sandbox network
    container_addr  TEXT,
    files           TEXT NOT NULL,        -- JSON list of {name, bytes, sha256}
    prospect        TEXT NOT NULL,        -- JSON information sheet
    requests        INTEGER NOT NULL DEFAULT 0,
    last_active_at  INTEGER
);
-- The scheduler asks for the earliest deadline among live sandboxes, and claims the due ones.
CREATE INDEX sandboxes_live_deadline ON sandboxes (expires_at)
    WHERE status IN ('provisioning', 'ready', 'sleeping');
-- Ended sandboxes whose objects are not yet confirmed gone.
CREATE INDEX sandboxes_pending_teardown ON sandboxes (ended_at)
    WHERE data_deleted_at IS NULL AND status IN ('ended', 'failed');
-- An address belongs to one sandbox from its creation until its objects are confirmed gone,
-- even while its container is stopped or dead: the Engine would hand a freed address to the
-- next container at once, and the proxy would then send one prospect to another's sandbox.
CREATE UNIQUE INDEX sandboxes_addr_slot ON sandboxes (addr_slot)
    WHERE addr_slot IS NOT NULL AND data_deleted_at IS NULL;
CREATE INDEX sandboxes_demo ON sandboxes (demo_id, id);
CREATE INDEX sandboxes_vendor ON sandboxes (vendor_id, id);

CREATE TABLE sandbox_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox_id TEXT NOT NULL REFERENCES sandboxes (id),
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    detail     TEXT
);
CREATE INDEX sandbox_events_sandbox ON sandbox_events (sandbox_id, seq);
