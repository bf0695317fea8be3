-- The metadata journal writes its rows with statements it prepares on its
-- own connection and sends as one pipeline per commit
-- (meta/src/journal/pg_pipeline.rs); migration 0019's procedures, which
-- its simple-query scripts called once per row, are no longer called.

DROP PROCEDURE cpfs_put_inode;
DROP PROCEDURE cpfs_drop_inode;
DROP PROCEDURE cpfs_put_dentry;
DROP PROCEDURE cpfs_drop_dentry;
DROP PROCEDURE cpfs_put_request;
DROP PROCEDURE cpfs_set_counters;
