-- The migration log for galleries that have no storage_migration_log yet.
-- The gallery creates that table itself, with a plain CREATE TABLE, in its
-- v2.5.0 migration: if anything else created it first, that migration fails
-- and the gallery no longer starts. So we never create it; our rows wait
-- here, with the gallery's columns, and move to the gallery's table once
-- it exists.
CREATE TABLE noodle_migrate_log (
    "id" uuid PRIMARY KEY,
    "entityType" varchar NOT NULL,
    "entityId" uuid NOT NULL,
    "fileType" varchar NULL,
    "oldPath" text NOT NULL,
    "newPath" text NOT NULL,
    "direction" varchar NOT NULL,
    "batchId" uuid NOT NULL,
    "migratedAt" timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX noodle_migrate_log_batch_idx ON noodle_migrate_log ("batchId");
CREATE INDEX noodle_migrate_log_entity_idx ON noodle_migrate_log ("entityId");

-- Earlier releases of noodle-migrate created storage_migration_log on
-- galleries that lacked it (recognisable by its gen_random_uuid() default;
-- the gallery's own uses immich_uuid_v7()). Unless the gallery has since
-- recorded its own migration of that table, give the table back: keep its
-- rows here and drop it, so the gallery's next upgrade can create it.
DO $$
DECLARE
  ours boolean;
  recorded boolean := false;
BEGIN
  IF to_regclass('storage_migration_log') IS NULL THEN
    RETURN;
  END IF;
  SELECT pg_get_expr(d.adbin, d.adrelid) = 'gen_random_uuid()' INTO ours
  FROM pg_attribute a
  JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  WHERE a.attrelid = to_regclass('storage_migration_log') AND a.attname = 'id';
  IF to_regclass('kysely_migrations') IS NOT NULL THEN
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM kysely_migrations WHERE name LIKE $1)'
      INTO recorded USING '%CreateStorageMigrationLogTable';
  END IF;
  IF coalesce(ours, false) AND NOT recorded THEN
    INSERT INTO noodle_migrate_log
      ("id", "entityType", "entityId", "fileType", "oldPath", "newPath", "direction", "batchId", "migratedAt")
    SELECT "id", "entityType", "entityId", "fileType", "oldPath", "newPath", "direction", "batchId", "migratedAt"
    FROM storage_migration_log;
    DROP TABLE storage_migration_log;
    RAISE NOTICE 'storage_migration_log, created by an earlier noodle-migrate, was handed back to the gallery; its rows are in noodle_migrate_log';
  END IF;
END $$;

-- Stale copies that a run replaced (no row pointed at them).
ALTER TABLE noodle_migrate_batch ADD COLUMN replaced bigint NOT NULL DEFAULT 0;
