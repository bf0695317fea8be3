-- The metadata journal's most frequent row changes as procedures: a batch's
-- script (meta/src/journal/pg_script.rs) CALLs them with literal values,
-- so each commit's statements are parsed as short calls and the INSERT …
-- ON CONFLICT inside is planned once per connection (PL/pgSQL keeps its
-- plans), not once per statement of every commit.
--
-- `p_epoch`: the owner epoch the batch was made under, NULL when the file
-- system is not served by lease; a row whose file system has another
-- owner now (another epoch, or no assignment) is not written.

CREATE PROCEDURE cpfs_put_inode(
    p_fs TEXT, p_epoch BIGINT, p_ino BIGINT, p_kind BIGINT, p_perm BIGINT, p_uid BIGINT,
    p_gid BIGINT, p_nlink BIGINT, p_size BIGINT, p_atime BIGINT, p_mtime BIGINT,
    p_ctime BIGINT, p_rdev BIGINT, p_parent BIGINT, p_target BYTEA, p_chunk_size BIGINT,
    p_chains TEXT, p_stored BIGINT)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO inodes (fs_id, ino, kind, perm, uid, gid, nlink, size, atime_ns, mtime_ns,
                        ctime_ns, rdev, parent, target, chunk_size, chains, stored)
    SELECT p_fs, p_ino, p_kind, p_perm, p_uid, p_gid, p_nlink, p_size, p_atime, p_mtime,
           p_ctime, p_rdev, p_parent, p_target, p_chunk_size, p_chains, p_stored
    WHERE p_epoch IS NULL
       OR EXISTS (SELECT 1 FROM meta_assignments a WHERE a.fs_id = p_fs AND a.epoch = p_epoch)
    ON CONFLICT (fs_id, ino) DO UPDATE SET kind = excluded.kind, perm = excluded.perm,
        uid = excluded.uid, gid = excluded.gid, nlink = excluded.nlink, size = excluded.size,
        atime_ns = excluded.atime_ns, mtime_ns = excluded.mtime_ns, ctime_ns = excluded.ctime_ns,
        rdev = excluded.rdev, parent = excluded.parent, target = excluded.target,
        chunk_size = excluded.chunk_size, chains = excluded.chains, stored = excluded.stored;
END $$;

CREATE PROCEDURE cpfs_drop_inode(p_fs TEXT, p_epoch BIGINT, p_ino BIGINT)
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM inodes i WHERE i.fs_id = p_fs AND i.ino = p_ino
        AND (p_epoch IS NULL
             OR EXISTS (SELECT 1 FROM meta_assignments a WHERE a.fs_id = p_fs AND a.epoch = p_epoch));
END $$;

CREATE PROCEDURE cpfs_put_dentry(
    p_fs TEXT, p_epoch BIGINT, p_parent BIGINT, p_name BYTEA, p_ino BIGINT, p_kind BIGINT)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dentries (fs_id, parent, name, ino, kind)
    SELECT p_fs, p_parent, p_name, p_ino, p_kind
    WHERE p_epoch IS NULL
       OR EXISTS (SELECT 1 FROM meta_assignments a WHERE a.fs_id = p_fs AND a.epoch = p_epoch)
    ON CONFLICT (fs_id, parent, name) DO UPDATE SET ino = excluded.ino, kind = excluded.kind;
END $$;

CREATE PROCEDURE cpfs_drop_dentry(p_fs TEXT, p_epoch BIGINT, p_parent BIGINT, p_name BYTEA)
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM dentries d WHERE d.fs_id = p_fs AND d.parent = p_parent AND d.name = p_name
        AND (p_epoch IS NULL
             OR EXISTS (SELECT 1 FROM meta_assignments a WHERE a.fs_id = p_fs AND a.epoch = p_epoch));
END $$;

CREATE PROCEDURE cpfs_put_request(
    p_fs TEXT, p_epoch BIGINT, p_client BIGINT, p_seq BIGINT, p_ino BIGINT, p_at BIGINT)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO meta_requests (fs_id, client, seq, ino, at)
    SELECT p_fs, p_client, p_seq, p_ino, p_at
    WHERE p_epoch IS NULL
       OR EXISTS (SELECT 1 FROM meta_assignments a WHERE a.fs_id = p_fs AND a.epoch = p_epoch)
    ON CONFLICT (fs_id, client, seq) DO UPDATE SET ino = excluded.ino, at = excluded.at;
END $$;

CREATE PROCEDURE cpfs_set_counters(
    p_fs TEXT, p_epoch BIGINT, p_next_ino BIGINT, p_used_bytes BIGINT, p_files BIGINT)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE fs_counters c SET next_ino = p_next_ino, used_bytes = p_used_bytes, files = p_files
    WHERE c.fs_id = p_fs
      AND (p_epoch IS NULL
           OR EXISTS (SELECT 1 FROM meta_assignments a WHERE a.fs_id = p_fs AND a.epoch = p_epoch));
END $$;
