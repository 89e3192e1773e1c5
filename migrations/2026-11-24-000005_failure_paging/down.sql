DROP INDEX IF EXISTS noodle_migrate_failure_retry_idx;
CREATE INDEX noodle_migrate_failure_retry_idx ON noodle_migrate_failure (batch_id, kind, outcome);
