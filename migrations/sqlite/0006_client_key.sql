-- Issue 12: the client a sandbox was made for (an IPv4 address or an IPv6 /64, behind
-- trusted proxies the right-most untrusted X-Forwarded-For hop), so that no one client
-- holds more than its share of the places. Forgotten once the sandbox's data is deleted.
ALTER TABLE sandboxes ADD COLUMN client_key TEXT;
CREATE INDEX sandboxes_client_key ON sandboxes (client_key) WHERE client_key IS NOT NULL;
