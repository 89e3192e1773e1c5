-- storage_migration_log belongs to the gallery: it stays.
DROP TABLE IF EXISTS noodle_migrate_failure;
DROP TABLE IF EXISTS noodle_migrate_batch;
