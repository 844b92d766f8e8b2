-- Issue 11: a sandbox's history is kept as structured events (`SandboxEvent` as JSON, in
-- `data`) beside their kind; the sentence the API shows is made from the event, never
-- stored, so rewording it cannot change what a receipt or a report reads. The sentences
-- of earlier rows are read here, once, into the same structure.
CREATE TABLE sandbox_history (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox_id TEXT NOT NULL REFERENCES sandboxes (id),
    at         INTEGER NOT NULL,
    -- `SandboxEvent::kind()`: what queries select on (an end is named by its reason).
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL
);

INSERT INTO sandbox_history (seq, sandbox_id, at, kind, data)
SELECT seq, sandbox_id, at, kind, CASE
    WHEN kind = 'created' THEN json_object(
        'type', 'created',
        'files', COALESCE(CAST(detail AS INTEGER), 0),
        'bytes', COALESCE(CAST(substr(detail, instr(detail, ', ') + 2) AS INTEGER), 0),
        'window_seconds', COALESCE(CAST(substr(detail, instr(detail, 'window ') + 7) AS INTEGER), 0),
        'from_warm_pool', json(CASE WHEN instr(detail, 'warm pool') > 0 THEN 'true' ELSE 'false' END))
    WHEN kind = 'data_placed' THEN json_object(
        'type', 'data_placed',
        'files', COALESCE(CAST(detail AS INTEGER), 0),
        'path', COALESCE(substr(detail, instr(detail, ' in ') + 4), ''))
    WHEN kind = 'started' THEN json_object(
        'type', 'started',
        'from_warm_pool', json(CASE WHEN detail IS NULL THEN 'false' ELSE 'true' END))
    WHEN kind IN ('ready', 'woke') THEN json_object(
        'type', kind,
        'after_ms', COALESCE(CAST(substr(detail, 4) AS INTEGER), 0))
    WHEN kind = 'extended' THEN json_object(
        'type', 'extended',
        'by_seconds', COALESCE(CAST(substr(detail, 4) AS INTEGER), 0),
        'until', CASE WHEN instr(detail, 'until ') > 0
                      THEN substr(detail, instr(detail, 'until ') + 6)
                      ELSE strftime('%Y-%m-%dT%H:%M:%fZ', at / 1000.0, 'unixepoch') END)
    WHEN kind = 'stopped' THEN json_object(
        'type', 'stopped',
        'exit_code', COALESCE(CAST(substr(detail, instr(detail, 'exit code ') + 10) AS INTEGER), -1),
        'oom_killed', json(CASE WHEN instr(detail, 'out of memory') > 0 THEN 'true' ELSE 'false' END))
    WHEN kind = 'failed' THEN json_object(
        'type', 'ended',
        'ending', json_object('reason', 'failed', 'failure', COALESCE(detail, '')),
        'recovered', json('false'))
    WHEN kind IN ('expired', 'ended_by_prospect', 'ended_by_vendor', 'ended_by_admin') THEN json_object(
        'type', 'ended',
        'ending', json_object('reason', kind),
        'recovered', json(CASE WHEN detail IS NULL THEN 'false' ELSE 'true' END))
    ELSE json_object('type', kind)
END
FROM sandbox_events;

DROP TABLE sandbox_events;
ALTER TABLE sandbox_history RENAME TO sandbox_events;
CREATE INDEX sandbox_events_sandbox ON sandbox_events (sandbox_id, seq);
