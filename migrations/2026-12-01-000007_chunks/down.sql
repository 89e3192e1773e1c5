ALTER TABLE noodle_migrate_batch DROP COLUMN IF EXISTS log_table;
ALTER TABLE noodle_migrate_batch DROP COLUMN IF EXISTS scope;
ALTER TABLE noodle_migrate_batch DROP COLUMN IF EXISTS chunked;
DROP TABLE IF EXISTS noodle_migrate_worker;
DROP TABLE IF EXISTS noodle_migrate_chunk;
