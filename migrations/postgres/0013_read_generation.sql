-- The read generation: a counter that every change to what
-- DescribeFileSystems shows moves, inside the writing transaction. A
-- process keeps a copy of those rows in memory (the control plane's read
-- model) and checks it with one cheap query; a change made by any process
-- sharing the database is seen at its next call. Usage counters
-- (fs_counters, node reports) change with every write and are refreshed
-- by age instead.
CREATE TABLE read_generation (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    n   BIGINT NOT NULL
);
INSERT INTO read_generation (id, n) VALUES (1, 0);

-- Deferred to commit, so the counter's row lock is the last one a writer
-- takes and is held only while it commits: two writers cannot deadlock on
-- it, whatever order they touched other rows in.
CREATE FUNCTION bump_read_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE read_generation SET n = n + 1 WHERE id = 1;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER file_systems_read_generation AFTER INSERT OR UPDATE OR DELETE ON file_systems DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_read_generation();
CREATE CONSTRAINT TRIGGER mount_targets_read_generation AFTER INSERT OR UPDATE OR DELETE ON mount_targets DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_read_generation();
CREATE CONSTRAINT TRIGGER tags_read_generation AFTER INSERT OR UPDATE OR DELETE ON tags DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_read_generation();
CREATE CONSTRAINT TRIGGER ldap_configs_read_generation AFTER INSERT OR UPDATE OR DELETE ON ldap_configs DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_read_generation();
CREATE CONSTRAINT TRIGGER fs_layouts_read_generation AFTER INSERT OR UPDATE OR DELETE ON fs_layouts DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_read_generation();
CREATE CONSTRAINT TRIGGER chain_tables_read_generation AFTER INSERT OR UPDATE OR DELETE ON chain_tables DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_read_generation();
