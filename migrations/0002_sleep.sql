-- Sleep: a sandbox nobody opened for `idle_ms` stops its container (keeping its data) until
-- the next request wakes it. NULL: never sleeps.
ALTER TABLE sandboxes ADD COLUMN idle_ms INTEGER;
CREATE INDEX sandboxes_idle ON sandboxes (status) WHERE idle_ms IS NOT NULL;
