ALTER TABLE noodle_migrate_failure DROP COLUMN IF EXISTS attempt;
