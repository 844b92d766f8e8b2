-- Issue 14: whose images are whose.

-- A vendor's credentials for a registry (`host[:port]`), one per server. The password is
-- kept only as the deployment's `SecretBox` sealed it (`v1:…`): the key is not the
-- database's to hold.
CREATE TABLE registry_credentials (
    vendor_id  TEXT NOT NULL REFERENCES vendors (id),
    server     TEXT NOT NULL,
    username   TEXT NOT NULL,
    password   TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (vendor_id, server)
);

-- Images only on the Engine that an operator gave a vendor: the vendor may name them in its
-- demos. Spelled as the Engine reads them (`name` is `name:latest`).
CREATE TABLE image_grants (
    vendor_id TEXT NOT NULL REFERENCES vendors (id),
    image     TEXT NOT NULL,
    given_at  INTEGER NOT NULL,
    PRIMARY KEY (vendor_id, image)
);

-- Every vendor keeps the Engine-only images its demos use now (a registry image: its first
-- part has a `.` or a `:`, or is `localhost`), given when its first such demo was made.
INSERT OR IGNORE INTO image_grants (vendor_id, image, given_at)
SELECT vendor_id,
       CASE WHEN instr(image, ':') > 0 THEN image ELSE image || ':latest' END,
       MIN(created_at)
FROM (SELECT vendor_id, created_at, json_extract(spec, '$.image') AS image
      FROM demos WHERE deleted_at IS NULL)
WHERE image IS NOT NULL
  AND NOT (instr(image, '/') > 0
           AND (instr(substr(image, 1, instr(image, '/') - 1), '.') > 0
                OR instr(substr(image, 1, instr(image, '/') - 1), ':') > 0
                OR substr(image, 1, instr(image, '/') - 1) = 'localhost'))
GROUP BY vendor_id, image;
