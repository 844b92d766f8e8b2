-- Issue 14: registry images are pulled with the vendor's credentials. A demo keeps why its
-- last pull failed (`image_error`, words for the vendor) and the digest that pull resolved
-- (`image_digest`): its sandboxes run exactly that digest until the next pull.
ALTER TABLE demos ADD COLUMN image_error TEXT;
ALTER TABLE demos ADD COLUMN image_digest TEXT;
