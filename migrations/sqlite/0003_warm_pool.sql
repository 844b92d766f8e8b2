-- Warm pools: containers of a demo created and started with no data and no owner, waiting
-- for a prospect. A member is not a sandbox (it has no token, deadline or data); claiming
-- one moves it into `sandboxes` under the same id and address slot, in one transaction.
CREATE TABLE warm_members (
    id         TEXT PRIMARY KEY,
    demo_id    TEXT NOT NULL REFERENCES demos (id),
    -- The demo's spec when the member was made: only a member of the current spec is
    -- handed out, so a demo change never serves a prospect from an old container.
    spec       TEXT NOT NULL,
    -- 'warming' (being made), 'warm' (ready to claim), 'draining' (being removed).
    state      TEXT NOT NULL,
    addr_slot  INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX warm_members_demo ON warm_members (demo_id, state);
