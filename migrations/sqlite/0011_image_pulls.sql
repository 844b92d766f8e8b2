-- Issue 14: registry images are pulled with the vendor's credentials. A demo keeps why its
-- last pull failed (`image_error`, words for the vendor) and the digest that pull resolved
-- (`image_digest`): its sandboxes run exactly that digest until the next pull.
ALTER TABLE demos ADD COLUMN image_error TEXT;
ALTER TABLE demos ADD COLUMN image_digest TEXT;

-- Every image a pull brought onto the Engine, pinned (`name@sha256:…`): with
-- `images.remove_unused` on, one that no demo runs and no live sandbox or warm member uses
-- any more is removed from the Engine.
CREATE TABLE pulled_images (
    reference TEXT PRIMARY KEY,
    pulled_at INTEGER NOT NULL
);
