-- Issue 17: the sales conversation. A trial may come from an invitation and carries the
-- prospect's answers to the demo's questions; feedback and contact requests are events
-- in `sandbox_events` (kinds `feedback`, `contact_requested`).
ALTER TABLE sandboxes ADD COLUMN invitation_id TEXT;
ALTER TABLE sandboxes ADD COLUMN answers TEXT NOT NULL DEFAULT '{}';

-- A vendor's invitation to a named prospect. Its id is what its link carries (random).
CREATE TABLE invitations (
    id          TEXT PRIMARY KEY,
    vendor_id   TEXT NOT NULL REFERENCES vendors (id),
    demo_id     TEXT NOT NULL REFERENCES demos (id),
    company     TEXT NOT NULL,
    email       TEXT,
    note        TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    opened_at   INTEGER,
    max_trials  INTEGER NOT NULL, -- trials it may start; a failed one does not count
    sandbox_id  TEXT,          -- the latest trial it started
    used_at     INTEGER        -- when that trial started
);
CREATE INDEX invitations_vendor ON invitations (vendor_id, created_at);

-- Views of a demo's page (and its invitations' pages), counted per minute.
CREATE TABLE demo_page_views (
    demo_id TEXT NOT NULL,
    minute  INTEGER NOT NULL,   -- milliseconds since the epoch / 60000
    views   INTEGER NOT NULL,
    PRIMARY KEY (demo_id, minute)
);

-- The funnel counts a demo's trials started since a moment.
CREATE INDEX sandboxes_demo_created ON sandboxes (demo_id, created_at);
CREATE INDEX sandboxes_invitation ON sandboxes (invitation_id) WHERE invitation_id IS NOT NULL;
CREATE INDEX sandbox_events_kind ON sandbox_events (kind, sandbox_id);
