-- A retry pages through a batch's failed files in row order: the index
-- gives each page directly, whatever the number of failures.
DROP INDEX IF EXISTS noodle_migrate_failure_retry_idx;
CREATE INDEX noodle_migrate_failure_retry_idx ON noodle_migrate_failure (batch_id, kind, outcome, row_id);
