-- Issue 7: what the vendor learns from a trial, and webhooks.

-- The shape of each uploaded file (never its values), worked out while it streamed in.
ALTER TABLE sandboxes ADD COLUMN profiles TEXT NOT NULL DEFAULT '[]';
-- Time spent using the demo: the spans between proxied requests less than 5 minutes apart.
ALTER TABLE sandboxes ADD COLUMN active_ms INTEGER NOT NULL DEFAULT 0;
-- The first request through the proxy.
ALTER TABLE sandboxes ADD COLUMN first_opened_at INTEGER;

ALTER TABLE vendors ADD COLUMN webhook_url TEXT;
-- The HMAC key of the vendor's deliveries (shown to the vendor once, when first set).
ALTER TABLE vendors ADD COLUMN webhook_secret TEXT;

-- The outbox: a delivery is written in the same transaction as the lifecycle event it
-- announces, so no change is lost to a crash; the sender removes nothing, it marks.
CREATE TABLE webhook_deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    vendor_id       TEXT NOT NULL REFERENCES vendors (id),
    sandbox_id      TEXT NOT NULL,
    type            TEXT NOT NULL,
    -- The exact body, signed as it is sent (the same bytes on every attempt).
    body            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    -- A sender holds a delivery until then; a crash lets it go at that time.
    lease_until     INTEGER,
    last_attempt_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER,
    -- Given up (retried for longer than a day).
    abandoned_at    INTEGER
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (sandbox_id, seq)
    WHERE delivered_at IS NULL AND abandoned_at IS NULL;
CREATE INDEX webhook_deliveries_vendor ON webhook_deliveries (vendor_id, seq);
