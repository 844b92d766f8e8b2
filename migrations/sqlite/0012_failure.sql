-- Issue 15: a failed sandbox carries `failure`, what went wrong in words (never what the
-- demo printed). Kept on the row, so reading a sandbox or a page of them needs no history;
-- the sandboxes that failed before keep the words their `failed` event gave.
ALTER TABLE sandboxes ADD COLUMN failure TEXT;

UPDATE sandboxes
SET failure = (
    SELECT json_extract(e.data, '$.ending.failure')
    FROM sandbox_events e
    WHERE e.sandbox_id = sandboxes.id AND e.kind = 'failed'
    ORDER BY e.at DESC
    LIMIT 1)
WHERE status = 'failed';
