//! Tests of the log's format.

use super::*;
use crate::journal::pg_pipeline::tests::inode;
use crate::journal::rows::Counters;
use cpfs_proto::meta::Kind;

fn dentry(name: &str, ino: Option<u64>) -> Change {
    Change::Dentry(1, name.as_bytes().to_vec(), ino.map(|i| (i, Kind::File)))
}

#[test]
fn a_log_row_decodes_to_what_was_encoded_and_an_unknown_format_is_refused() {
    let changes = vec![
        dentry("a", Some(7)),
        Change::Counters(Counters {
            next_ino: 8,
            used_bytes: 0,
            files: 2,
        }),
        Change::Orphan(5, None),
    ];
    let body = encode(&changes, &[42]).unwrap();
    let back = decode(&body).unwrap();
    assert_eq!(format!("{:?}", back.changes), format!("{changes:?}"));
    assert_eq!(back.forget, vec![42]);
    let mut newer = body.clone();
    newer[0] = FORMAT + 1;
    assert!(decode(&newer).unwrap_err().contains("unknown format"));
    assert!(decode(&[]).is_err());
    assert!(decode(&body[..body.len() - 1]).is_err());
}

/// The log's format 1, byte for byte: a change to the encoded types
/// (`Change`, `Inode`, the protocol's `Attr`, `Kind`) changes these bytes,
/// and must come with a new [`FORMAT`] and a decoder for the old one, or
/// a server would misread rows a server of the previous release left.
#[test]
fn the_log_format_is_what_format_1_says() {
    use crate::journal::rows::{FilesetRow, Owner, OwnerRow};
    let changes = vec![
        inode(9),
        Change::Inode(10, None),
        dentry("n", Some(9)),
        Change::Xattr(9, b"user.k".to_vec(), Some(b"v".to_vec())),
        Change::Orphan(9, Some(3)),
        Change::Counters(Counters {
            next_ino: 11,
            used_bytes: 12,
            files: 13,
        }),
        Change::Fileset(
            "fset-1".into(),
            Some(FilesetRow {
                ino: 9,
                used_bytes: 1,
                files: 2,
                size_limit: Some(3),
                file_limit: None,
            }),
        ),
        Change::OwnerQuota(
            Owner::Gid(7),
            Some(OwnerRow {
                used_bytes: 1,
                files: 1,
                size_limit: None,
                file_limit: Some(5),
            }),
        ),
        Change::Request {
            client: 1,
            seq: 2,
            ino: 9,
            at: 4,
        },
    ];
    let body = encode(&changes, &[6]).unwrap();
    let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, FORMAT_1, "the encoding changed:\n{hex}");
}

const FORMAT_1: &str = concat!(
    "0109000000000000000000000009000000000000000109000000000000000000",
    "0000a40100000100000000000000000000000000000000000000000000000000",
    "0000010000000000000001000000000000000100000000000000000000000100",
    "000000000000000000100000000000010000000000000000000000000000000a",
    "000000000000000001000000010000000000000001000000000000006e010900",
    "0000000000000000000002000000090000000000000006000000000000007573",
    "65722e6b01010000000000000076030000000900000000000000010300000000",
    "000000040000000b000000000000000c000000000000000d0000000000000005",
    "0000000600000000000000667365742d31010900000000000000010000000000",
    "0000020000000000000001030000000000000000060000000100000007000000",
    "0101000000000000000100000000000000000105000000000000000700000001",
    "0000000000000002000000000000000900000000000000040000000000000001",
    "000000000000000600000000000000",
);

/// Records the folds it is asked for, to check how the folder cuts them.
#[derive(Default)]
struct Recorded {
    folds: Vec<(usize, Logged)>,
}

impl LogStore for Recorded {
    const FOLD_ROWS: usize = 4;

    async fn fold(
        &mut self,
        batch: &Batch,
        drops: &[(Arc<str>, i64)],
    ) -> Result<Vec<Arc<str>>, String> {
        let mut drops = drops.to_vec();
        drops.sort();
        self.folds.push((batch.len(), drops));
        Ok(Vec::new())
    }

    async fn read_log(&mut self, _fs: &str, _limit: i64) -> Result<Vec<(i64, Vec<u8>)>, String> {
        Ok(Vec::new())
    }
}

/// A committed batch of two new entries of `fs`, logged as `seq`.
fn committed(fs: &str, epoch: u64, seq: i64) -> (Batch, Logged) {
    let fs: Arc<str> = fs.into();
    let batch = Batch {
        rows: vec![(
            fs.clone(),
            vec![
                dentry(&format!("a{seq}"), Some(seq as u64)),
                dentry(&format!("b{seq}"), Some(seq as u64)),
            ],
        )],
        forget: Vec::new(),
        epochs: vec![(fs.clone(), epoch)],
    };
    (batch, vec![(fs, seq)])
}

/// A fold is cut into transactions of about `FOLD_ROWS` rows (whole
/// batches), each deleting the log rows it folded, and where a file
/// system's epoch changes.
#[tokio::test]
async fn the_folder_cuts_a_long_fold_and_one_across_epochs() {
    let (_folds, inbox) = Folds::channel();
    let mut store = Recorded::default();
    let gathered = vec![
        committed("fs-a", 1, 1),
        committed("fs-a", 1, 2),
        committed("fs-a", 1, 3),
        committed("fs-a", 2, 4),
        committed("fs-a", 2, 5),
    ];
    fold_gathered(&mut store, gathered, &inbox.rx).await;
    let at = |seq| vec![(Arc::<str>::from("fs-a"), seq)];
    assert_eq!(
        store.folds,
        vec![(4, at(2)), (2, at(3)), (4, at(5))],
        "(rows, log rows deleted) of each transaction"
    );
}
