-- Issue 13: what happened to the deployment rather than to one sandbox (the Engine's
-- outages, the sandbox network made again, a demo's image gone), for the consoles.
-- `ServiceEvent` as JSON in `data`, beside its kind; `vendor_id` is set for events a
-- vendor sees too (about its demos).
CREATE TABLE service_events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    vendor_id TEXT,
    data      TEXT NOT NULL
);
CREATE INDEX service_events_vendor ON service_events (vendor_id, seq);
