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
CREATE TRIGGER file_systems_read_generation_i AFTER INSERT ON file_systems BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER file_systems_read_generation_u AFTER UPDATE ON file_systems BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER file_systems_read_generation_d AFTER DELETE ON file_systems BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER mount_targets_read_generation_i AFTER INSERT ON mount_targets BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER mount_targets_read_generation_u AFTER UPDATE ON mount_targets BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER mount_targets_read_generation_d AFTER DELETE ON mount_targets BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER tags_read_generation_i AFTER INSERT ON tags BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER tags_read_generation_u AFTER UPDATE ON tags BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER tags_read_generation_d AFTER DELETE ON tags BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER ldap_configs_read_generation_i AFTER INSERT ON ldap_configs BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER ldap_configs_read_generation_u AFTER UPDATE ON ldap_configs BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER ldap_configs_read_generation_d AFTER DELETE ON ldap_configs BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER fs_layouts_read_generation_i AFTER INSERT ON fs_layouts BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER fs_layouts_read_generation_u AFTER UPDATE ON fs_layouts BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER fs_layouts_read_generation_d AFTER DELETE ON fs_layouts BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER chain_tables_read_generation_i AFTER INSERT ON chain_tables BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER chain_tables_read_generation_u AFTER UPDATE ON chain_tables BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER chain_tables_read_generation_d AFTER DELETE ON chain_tables BEGIN UPDATE read_generation SET n = n + 1 WHERE id = 1; END;
