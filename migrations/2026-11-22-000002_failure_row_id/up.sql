-- The row whose path column a failed file lives in (for encoded videos it
-- differs from entity_id), so that a retry can select exactly those rows.
ALTER TABLE noodle_migrate_failure ADD COLUMN row_id uuid NULL;
CREATE INDEX noodle_migrate_failure_retry_idx ON noodle_migrate_failure (batch_id, kind, outcome);
