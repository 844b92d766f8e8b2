-- Nodes, as SQLite's 0015_nodes.sql (which says what each column means). Postgres began
-- with nodes, so every row has its node from the start.

CREATE TABLE nodes (
    name          TEXT COLLATE "C" PRIMARY KEY,
    url           TEXT NOT NULL,
    engine        TEXT NOT NULL,
    max_sandboxes BIGINT NOT NULL,
    started_at    BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL,
    caretaker     TEXT,
    care_until    BIGINT
);

CREATE TABLE node_images (
    node    TEXT NOT NULL,
    demo_id TEXT NOT NULL,
    ready   BIGINT NOT NULL,
    PRIMARY KEY (node, demo_id)
);

ALTER TABLE sandboxes ADD COLUMN node TEXT NOT NULL;
ALTER TABLE warm_members ADD COLUMN node TEXT NOT NULL;
CREATE INDEX sandboxes_node_status ON sandboxes (node, status);
CREATE INDEX warm_members_node ON warm_members (node, state);
DROP INDEX sandboxes_addr_slot;
CREATE UNIQUE INDEX sandboxes_addr_slot ON sandboxes (node, addr_slot)
    WHERE addr_slot IS NOT NULL AND data_deleted_at IS NULL;

ALTER TABLE pulled_images ADD COLUMN node TEXT NOT NULL;
ALTER TABLE pulled_images DROP CONSTRAINT pulled_images_pkey;
ALTER TABLE pulled_images ADD PRIMARY KEY (node, reference);

ALTER TABLE webhook_deliveries ADD COLUMN leased_by TEXT;
