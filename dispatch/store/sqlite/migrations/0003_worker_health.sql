-- Worker health: the checks of a worker's last heartbeat (a JSON array of api.Check, NULL before its first
-- report) and when the worker ran them (Unix nanoseconds, NULL when it did not say).
ALTER TABLE workers ADD COLUMN checks TEXT;
ALTER TABLE workers ADD COLUMN last_check INTEGER;

-- An operation only one worker may claim (an admin's health check of that worker); NULL for the rest.
ALTER TABLE operations ADD COLUMN target_worker TEXT;

-- The pool queue leaves targeted operations out, so a claim walks them in their own index, first.
DROP INDEX operations_queue;
CREATE INDEX operations_queue ON operations (pool, seq) WHERE state = 'queued' AND ready = 1 AND target_worker IS NULL;
CREATE INDEX operations_targeted ON operations (target_worker, seq) WHERE state = 'queued' AND target_worker IS NOT NULL;
