ALTER TABLE noodle_migrate_batch DROP COLUMN IF EXISTS dump_name;
