DROP INDEX IF EXISTS noodle_migrate_failure_retry_idx;
ALTER TABLE noodle_migrate_failure DROP COLUMN IF EXISTS row_id;
