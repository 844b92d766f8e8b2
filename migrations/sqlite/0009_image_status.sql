-- Issue 13: a demo whose image vanished from the Engine (`docker image prune -a`) leaves
-- the catalog and takes no trial until the image is back. `ready` or `missing` (the images
-- issue adds `pulling` and `failed`: no CHECK, so adding them needs no table rebuild).
-- Demos registered before were checked then; the reconciler's first pass checks again.
ALTER TABLE demos ADD COLUMN image_status TEXT NOT NULL DEFAULT 'ready';
