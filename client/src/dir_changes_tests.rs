use super::*;

fn unlink(parent: u64) -> MetaOp {
    MetaOp::Unlink {
        parent,
        name: b"f".to_vec(),
    }
}

#[test]
fn a_change_counts_for_its_directory_only() {
    let changes = DirChanges::default();
    let read = changes.generation();
    changes.after(&unlink(7));
    assert!(!changes.unchanged_since(7, read));
    assert!(changes.unchanged_since(8, read));
    // A copy read after the change is current.
    assert!(changes.unchanged_since(7, changes.generation()));
    // Reads change nothing.
    let read = changes.generation();
    changes.after(&MetaOp::Lookup {
        parent: 7,
        name: b"f".to_vec(),
    });
    assert!(changes.unchanged_since(7, read));
}

#[test]
fn another_clients_change_a_lost_stream_or_a_rename_count_too() {
    let changes = DirChanges::default();
    let read = changes.generation();
    changes.invalidate(7);
    assert!(!changes.unchanged_since(7, read));
    assert!(changes.unchanged_since(8, read));

    let read = changes.generation();
    changes.clear();
    assert!(!changes.unchanged_since(8, read));

    let read = changes.generation();
    changes.after(&MetaOp::Rename {
        parent: 1,
        name: b"a".to_vec(),
        new_parent: 1,
        new_name: b"b".to_vec(),
        flags: 0,
    });
    assert!(
        !changes.unchanged_since(9, read),
        "the moved inode is unknown"
    );
}

#[test]
fn beyond_the_bound_every_directory_counts_as_changed() {
    let changes = DirChanges::default();
    let read = changes.generation();
    for ino in 100..100 + MAX_REMEMBERED as u64 + 1 {
        changes.invalidate(ino);
    }
    assert!(changes.lock().changed.len() <= MAX_REMEMBERED);
    assert!(!changes.unchanged_since(5, read), "forgotten, so changed");
}
