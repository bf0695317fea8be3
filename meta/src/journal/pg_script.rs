//! A batch as one PostgreSQL script: every statement of the batch in one
//! simple-query message, so a commit costs one round trip to the server
//! whatever the batch holds (a statement per round trip made a lone create
//! wait for about eight of them). The frequent rows (inodes, entries,
//! request records, counters) are CALLs of procedures whose statements
//! PostgreSQL plans once per connection; the rare ones are statements.
//!
//! PostgreSQL runs the statements of one simple-query message as one
//! transaction: all of them or none. The first statement locks each file
//! system's assignment row (`FOR SHARE`) and returns its epoch; every
//! change of a file system is guarded by its epoch being the one the batch
//! was made under, so a batch made by a deposed owner changes nothing of
//! that file system, and a reassignment (an UPDATE of the row) waits for
//! this commit, as with a transaction of separate statements.
//!
//! Values are written as literals, so nothing here may come from a caller
//! unchecked: numbers are formatted integers, byte strings are hex decoded
//! by the server, and text is quoted with its quotes doubled.

use std::fmt::Write;
use std::sync::Arc;

use super::rows::{chains_text, limit_column, upsert_parts, Batch, Change};

/// The script for `batch`. Its only rows are (fs_id, epoch) of the file
/// systems in `batch.epochs` whose assignment row exists.
pub(crate) fn render(batch: &Batch) -> String {
    let mut sql = String::with_capacity(512 + 256 * batch.rows.len());
    if !batch.epochs.is_empty() {
        sql.push_str("SELECT fs_id, epoch FROM meta_assignments WHERE fs_id IN (");
        for (i, (fs, _)) in batch.epochs.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            text(&mut sql, fs);
        }
        sql.push_str(") FOR SHARE;\n");
    }
    for (fs, before) in &batch.forget {
        let _ = write!(sql, "DELETE FROM meta_requests WHERE fs_id = ");
        text(&mut sql, fs);
        let _ = write!(sql, " AND at < {before}");
        guard(&mut sql, batch, fs, " AND ");
        sql.push_str(";\n");
    }
    for (fs, rows) in &batch.rows {
        for c in rows {
            change(&mut sql, batch, fs, c);
        }
    }
    sql
}

/// Which of `batch`'s file systems are fenced off, from the script's rows
/// (fs_id, epoch): those whose stored epoch is not the batch's, or whose
/// assignment row is gone.
pub(crate) fn fenced(batch: &Batch, stored: &[(String, i64)]) -> Vec<Arc<str>> {
    batch
        .epochs
        .iter()
        .filter(|(fs, epoch)| {
            !stored
                .iter()
                .any(|(s, e)| s.as_str() == fs.as_ref() && *e == *epoch as i64)
        })
        .map(|(fs, _)| fs.clone())
        .collect()
}

fn change(sql: &mut String, batch: &Batch, fs: &Arc<str>, c: &Change) {
    match c {
        Change::Inode(ino, Some(i)) => {
            let a = &i.attr;
            call(sql, "cpfs_put_inode", batch, fs);
            let _ = write!(
                sql,
                ", {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, ",
                *ino as i64,
                a.kind.code(),
                a.perm as i64,
                a.uid as i64,
                a.gid as i64,
                a.nlink as i64,
                a.size as i64,
                a.atime_ns,
                a.mtime_ns,
                a.ctime_ns,
                a.rdev as i64,
                i.parent as i64,
            );
            match &i.target {
                Some(t) => bytes(sql, t),
                None => sql.push_str("NULL"),
            }
            let _ = write!(sql, ", {}, ", i.chunk_size as i64);
            text(sql, &chains_text(&i.chains));
            let _ = write!(sql, ", {})", a.stored as i64);
        }
        Change::Inode(ino, None) => {
            call(sql, "cpfs_drop_inode", batch, fs);
            let _ = write!(sql, ", {})", *ino as i64);
        }
        Change::Dentry(parent, name, Some((ino, kind))) => {
            call(sql, "cpfs_put_dentry", batch, fs);
            let _ = write!(sql, ", {}, ", *parent as i64);
            bytes(sql, name);
            let _ = write!(sql, ", {}, {})", *ino as i64, kind.code());
        }
        Change::Dentry(parent, name, None) => {
            call(sql, "cpfs_drop_dentry", batch, fs);
            let _ = write!(sql, ", {}, ", *parent as i64);
            bytes(sql, name);
            sql.push(')');
        }
        Change::Xattr(ino, name, Some(value)) => {
            sql.push_str(concat!(upsert_parts!(xattr_head), "SELECT "));
            text(sql, fs);
            let _ = write!(sql, ", {}, ", *ino as i64);
            bytes(sql, name);
            sql.push_str(", ");
            bytes(sql, value);
            guard(sql, batch, fs, " WHERE ");
            sql.push_str(upsert_parts!(xattr_tail));
        }
        Change::Xattr(ino, name, None) => {
            sql.push_str("DELETE FROM xattrs WHERE fs_id = ");
            text(sql, fs);
            let _ = write!(sql, " AND ino = {} AND name = ", *ino as i64);
            bytes(sql, name);
            guard(sql, batch, fs, " AND ");
        }
        Change::Orphan(ino, Some(since)) => {
            sql.push_str(concat!(upsert_parts!(orphan_head), "SELECT "));
            text(sql, fs);
            let _ = write!(sql, ", {}, {since}", *ino as i64);
            guard(sql, batch, fs, " WHERE ");
            sql.push_str(upsert_parts!(orphan_tail));
        }
        Change::Orphan(ino, None) => {
            sql.push_str("DELETE FROM orphans WHERE fs_id = ");
            text(sql, fs);
            let _ = write!(sql, " AND ino = {}", *ino as i64);
            guard(sql, batch, fs, " AND ");
        }
        Change::Counters(c) => {
            call(sql, "cpfs_set_counters", batch, fs);
            let _ = write!(
                sql,
                ", {}, {}, {})",
                c.next_ino as i64, c.used_bytes as i64, c.files as i64
            );
        }
        Change::Fileset(id, Some(f)) => {
            sql.push_str(concat!(upsert_parts!(fileset_head), "SELECT "));
            text(sql, fs);
            sql.push_str(", ");
            text(sql, id);
            let _ = write!(
                sql,
                ", {}, {}, {}, {}, {}",
                f.ino as i64,
                f.used_bytes as i64,
                f.files as i64,
                limit_column(f.size_limit),
                limit_column(f.file_limit)
            );
            guard(sql, batch, fs, " WHERE ");
            sql.push_str(upsert_parts!(fileset_tail));
        }
        Change::Fileset(id, None) => {
            sql.push_str("DELETE FROM fileset_usage WHERE fs_id = ");
            text(sql, fs);
            sql.push_str(" AND fset_id = ");
            text(sql, id);
            guard(sql, batch, fs, " AND ");
        }
        Change::OwnerQuota(o, Some(r)) => {
            sql.push_str(concat!(upsert_parts!(owner_head), "SELECT "));
            text(sql, fs);
            sql.push_str(", ");
            text(sql, o.type_name());
            let _ = write!(
                sql,
                ", {}, {}, {}, {}, {}",
                o.id(),
                r.used_bytes as i64,
                r.files as i64,
                limit_column(r.size_limit),
                limit_column(r.file_limit)
            );
            guard(sql, batch, fs, " WHERE ");
            sql.push_str(upsert_parts!(owner_tail));
        }
        Change::OwnerQuota(o, None) => {
            sql.push_str("DELETE FROM user_quota_usage WHERE fs_id = ");
            text(sql, fs);
            sql.push_str(" AND user_type = ");
            text(sql, o.type_name());
            let _ = write!(sql, " AND user_id = {}", o.id());
            guard(sql, batch, fs, " AND ");
        }
        Change::Request {
            client,
            seq,
            ino,
            at,
        } => {
            call(sql, "cpfs_put_request", batch, fs);
            let _ = write!(
                sql,
                ", {}, {}, {}, {at})",
                *client as i64, *seq as i64, *ino as i64
            );
        }
        Change::ForgetRequests { .. } => return,
    }
    sql.push_str(";\n");
}

/// The start of a CALL of one of the journal's procedures (migration
/// 0019 of PostgreSQL): its name, the file system and the batch's epoch
/// for it (NULL: not served by lease); the caller adds the row's values
/// and the closing parenthesis. The procedures write a row only while the
/// epoch is the file system's, as [`guard`] does for the other statements.
fn call(sql: &mut String, procedure: &str, batch: &Batch, fs: &Arc<str>) {
    sql.push_str("CALL ");
    sql.push_str(procedure);
    sql.push('(');
    text(sql, fs);
    match batch.epoch_of(fs) {
        Some(epoch) => {
            let _ = write!(sql, ", {}", epoch as i64);
        }
        None => sql.push_str(", NULL"),
    }
}

/// `lead` and the condition that `fs` is still owned under the batch's
/// epoch, when the batch names one for it (nothing otherwise).
fn guard(sql: &mut String, batch: &Batch, fs: &Arc<str>, lead: &str) {
    if let Some(epoch) = batch.epoch_of(fs) {
        sql.push_str(lead);
        sql.push_str("EXISTS (SELECT 1 FROM meta_assignments WHERE fs_id = ");
        text(sql, fs);
        let _ = write!(sql, " AND epoch = {})", epoch as i64);
    }
}

/// A text literal: quotes doubled (the server's
/// `standard_conforming_strings`, on by default and since 9.1, keeps
/// backslashes as they are).
fn text(sql: &mut String, s: &str) {
    sql.push('\'');
    for ch in s.chars() {
        if ch == '\'' {
            sql.push('\'');
        }
        sql.push(ch);
    }
    sql.push('\'');
}

/// A bytea literal the server decodes from hex: no byte of the value
/// reaches the SQL text as itself.
fn bytes(sql: &mut String, b: &[u8]) {
    sql.push_str("decode('");
    for byte in b {
        let _ = write!(sql, "{byte:02x}");
    }
    sql.push_str("', 'hex')");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled_and_bytes_never_appear_raw() {
        let mut s = String::new();
        text(&mut s, "o'neil\\");
        assert_eq!(s, "'o''neil\\'");
        let mut s = String::new();
        bytes(&mut s, b"a';--\0\xff");
        assert_eq!(s, "decode('61273b2d2d00ff', 'hex')");
    }

    #[test]
    fn frequent_rows_are_procedure_calls_guarded_by_the_batch_epoch() {
        use cpfs_proto::meta::Kind;
        let rows = vec![
            Change::Dentry(1, b"it's".to_vec(), Some((5, Kind::File))),
            Change::Dentry(1, b"old".to_vec(), None),
            Change::Request {
                client: 7,
                seq: 9,
                ino: 5,
                at: 11,
            },
        ];
        let leased = Batch {
            rows: vec![("fs-a".into(), rows.clone())],
            epochs: vec![("fs-a".into(), 3)],
            ..Default::default()
        };
        let script = render(&leased);
        assert!(
            script.contains("CALL cpfs_put_dentry('fs-a', 3, 1, decode('69742773', 'hex'), 5, 1);"),
            "{script}"
        );
        assert!(script.contains("CALL cpfs_drop_dentry('fs-a', 3, 1, decode('6f6c64', 'hex'));"));
        assert!(script.contains("CALL cpfs_put_request('fs-a', 3, 7, 9, 5, 11);"));
        // Not served by lease: no epoch to check.
        let free = Batch {
            rows: vec![("fs-b".into(), rows)],
            ..Default::default()
        };
        assert!(render(&free).contains("CALL cpfs_put_request('fs-b', NULL, 7, 9, 5, 11);"));
    }

    #[test]
    fn the_epoch_rows_tell_which_file_systems_are_fenced() {
        let batch = Batch {
            epochs: vec![("a".into(), 3), ("b".into(), 5), ("c".into(), 1)],
            ..Default::default()
        };
        let stored = vec![("a".to_string(), 3), ("b".to_string(), 6)];
        let fenced = fenced(&batch, &stored);
        assert_eq!(fenced, vec![Arc::<str>::from("b"), Arc::from("c")]);
        let script = render(&batch);
        assert!(script.starts_with(
            "SELECT fs_id, epoch FROM meta_assignments WHERE fs_id IN ('a', 'b', 'c') FOR SHARE;"
        ));
    }
}
