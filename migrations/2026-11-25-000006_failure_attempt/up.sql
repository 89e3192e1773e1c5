-- Which attempt at a file wrote its failure record: a commit sent again
-- after its answer was lost carries the same attempt and must not count
-- the file a second time.
ALTER TABLE noodle_migrate_failure ADD COLUMN attempt uuid;
