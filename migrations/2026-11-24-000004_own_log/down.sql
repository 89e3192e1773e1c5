ALTER TABLE noodle_migrate_batch DROP COLUMN IF EXISTS replaced;
DROP TABLE IF EXISTS noodle_migrate_log;
