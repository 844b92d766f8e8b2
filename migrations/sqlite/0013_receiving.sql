-- Issue 16: a sandbox is recorded as soon as its form names the demo, so its container is
-- made while the files stream in. Until the last file is in it is `receiving`: it holds its
-- place but shows in no list, and a refused or abandoned upload deletes the row outright.
ALTER TABLE sandboxes ADD COLUMN receiving INTEGER NOT NULL DEFAULT 0;
