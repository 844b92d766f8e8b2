-- Issue 12: data at rest.

-- What a demo's load command printed when it failed: perhaps the prospect's own data, so it
-- is kept here, beside the sandbox, and shown only to the holder of the sandbox's token
-- (the trial page, the sandbox token's API view); never in events, webhooks, reports or
-- logs. NULL: the command did not fail, or printed nothing.
ALTER TABLE sandboxes ADD COLUMN load_output TEXT;

-- Earlier versions wrote that output into the failure event ("the load command exited with
-- code N: <output>"): it moves to the sandbox, and the event keeps the sentence before it.
UPDATE sandboxes SET load_output = (
    SELECT substr(json_extract(e.data, '$.ending.failure'),
                  instr(json_extract(e.data, '$.ending.failure'), ': ') + 2)
    FROM sandbox_events e
    WHERE e.sandbox_id = sandboxes.id AND e.kind = 'failed'
      AND json_extract(e.data, '$.ending.failure') LIKE 'the load command exited with code %: %'
    ORDER BY e.seq DESC LIMIT 1)
WHERE id IN (
    SELECT sandbox_id FROM sandbox_events
    WHERE kind = 'failed'
      AND json_extract(data, '$.ending.failure') LIKE 'the load command exited with code %: %');

UPDATE sandbox_events
SET data = json_set(data, '$.ending.failure',
                    substr(json_extract(data, '$.ending.failure'), 1,
                           instr(json_extract(data, '$.ending.failure'), ': ') - 1))
WHERE kind = 'failed'
  AND json_extract(data, '$.ending.failure') LIKE 'the load command exited with code %: %';

-- Webhook secrets stored as plain text by earlier versions are sealed at start, in Rust
-- (`Webhooks::recover`): the key is not the database's to hold.
