-- Retention (DeleteFinished) finds what ended before a time through these instead of scanning the tables:
-- operations outside a deployment by their end, and deployments by theirs (their steps go with them).
-- Operations of a deployment are left out of the first index: they are never deleted on their own.
CREATE INDEX operations_finished ON operations (finished_at) WHERE finished_at IS NOT NULL AND deployment_id IS NULL;
CREATE INDEX deployments_finished ON deployments (finished_at) WHERE finished_at IS NOT NULL;
