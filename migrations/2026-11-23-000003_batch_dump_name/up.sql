-- The database dump taken before the batch started, if one was asked for:
-- the first thing to restore if the batch has to be undone by hand.
ALTER TABLE noodle_migrate_batch ADD COLUMN dump_name text NULL;
