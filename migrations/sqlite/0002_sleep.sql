-- Sleep: a sandbox nobody opened for `idle_ms` stops its container (keeping its data) until
-- the next request wakes it. NULL: never sleeps.
ALTER TABLE sandboxes ADD COLUMN idle_ms INTEGER;
-- A sleeping sandbox being woken holds a running place from the moment the wake is decided,
-- so two wakes (or a wake and a creation) cannot both take the last one.
ALTER TABLE sandboxes ADD COLUMN waking_since INTEGER;
CREATE INDEX sandboxes_idle ON sandboxes (status) WHERE idle_ms IS NOT NULL;
