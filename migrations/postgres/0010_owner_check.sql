-- The metadata journal's fencing check, for its one-message batches: fails
-- the transaction unless `fs` is still owned under epoch `expected`, and
-- holds the assignment row (FOR SHARE) so that no reassignment commits
-- before the batch does.
CREATE FUNCTION cpfs_owner_is(fs TEXT, expected BIGINT) RETURNS VOID AS $$
BEGIN
    PERFORM 1 FROM meta_assignments WHERE fs_id = fs AND epoch = expected FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'cpfs-fenced: % is owned by another metadata server now', fs
            USING ERRCODE = 'P0001';
    END IF;
END
$$ LANGUAGE plpgsql;
