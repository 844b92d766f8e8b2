-- Nodes: several `testdrive serve` processes may share one (Postgres) database, each
-- driving its own Docker Engine. SQLite has one node; its rows from before get the node's
-- name when it connects (`SqlStore::connect`), so `node` stays NULL-able here only.

-- Every node ever registered. `last_seen`: its last heartbeat (down after 15 s without).
-- `caretaker`, `care_until`: the node keeping this one's deadlines while it is down, and
-- until when (a lease: another may take over after it).
CREATE TABLE nodes (
    name          TEXT PRIMARY KEY,
    url           TEXT NOT NULL,
    engine        TEXT NOT NULL,
    max_sandboxes INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    caretaker     TEXT,
    care_until    INTEGER
);

-- Whether a node's Engine has a demo's image (1) or lacks it (0): trials go only where
-- the image is.
CREATE TABLE node_images (
    node    TEXT NOT NULL,
    demo_id TEXT NOT NULL,
    ready   INTEGER NOT NULL,
    PRIMARY KEY (node, demo_id)
);

-- A sandbox and a warm member run on one node: its Engine, its disk, its address slots.
ALTER TABLE sandboxes ADD COLUMN node TEXT;
ALTER TABLE warm_members ADD COLUMN node TEXT;
CREATE INDEX sandboxes_node_status ON sandboxes (node, status);
CREATE INDEX warm_members_node ON warm_members (node, state);
-- Each node has its own subnet: a slot is unique per node.
DROP INDEX sandboxes_addr_slot;
CREATE UNIQUE INDEX sandboxes_addr_slot ON sandboxes (node, addr_slot)
    WHERE addr_slot IS NOT NULL AND data_deleted_at IS NULL;

-- Images are pulled onto one node's Engine: each node keeps its own list.
CREATE TABLE node_pulled_images (
    node      TEXT,
    reference TEXT NOT NULL,
    pulled_at INTEGER NOT NULL
);
INSERT INTO node_pulled_images (node, reference, pulled_at)
SELECT NULL, reference, pulled_at FROM pulled_images;
DROP TABLE pulled_images;
ALTER TABLE node_pulled_images RENAME TO pulled_images;
CREATE UNIQUE INDEX pulled_images_node_reference ON pulled_images (node, reference);

-- The node sending a delivery (its lease): at its start a node frees only its own leases.
ALTER TABLE webhook_deliveries ADD COLUMN leased_by TEXT;
