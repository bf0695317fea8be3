//! Replays every fuzz target over its seeds and over whatever corpus and
//! crash inputs `cargo fuzz` left in `corpus/<target>` and
//! `artifacts/<target>` (none in a fresh clone), without libFuzzer, on
//! stable: a crash found once stays a failing test until it is fixed.

use std::path::Path;

#[test]
fn seeds_are_accepted_as_the_protocols_mean_them() {
    // The seeds are real requests: if they stopped verifying or decoding,
    // the fuzzers would start far from anything the parsers accept.
    for (target, name, bytes) in cpfs_fuzz::seeds() {
        match target {
            "v1_claim" => assert_eq!(cpfs_fuzz::v1_claim(&bytes), Some(true), "{name}"),
            "v3_claim" => assert_eq!(cpfs_fuzz::v3_claim(&bytes), Some(true), "{name}"),
            "params" => assert_eq!(cpfs_fuzz::params(&bytes), Some(true), "{name}"),
            "node_frame" => assert_eq!(cpfs_fuzz::node_frame(&bytes), 2, "{name}"),
            "meta_frame" => assert_eq!(cpfs_fuzz::meta_frame(&bytes), 2, "{name}"),
            other => panic!("seed for unknown target {other}"),
        }
    }
    for target in cpfs_fuzz::TARGETS {
        assert!(
            cpfs_fuzz::seeds().iter().any(|(t, _, _)| t == target),
            "no seed for {target}"
        );
    }
}

#[test]
fn a_tampered_seed_is_refused() {
    for (target, _, mut bytes) in cpfs_fuzz::seeds() {
        let verified = match target {
            "v1_claim" => {
                // Changes a signed value (the Action) but not the signature.
                let s = String::from_utf8(bytes.clone())
                    .unwrap()
                    .replace("DescribeFileSystems", "DeleteFileSystems");
                cpfs_fuzz::v1_claim(s.as_bytes())
            }
            "v3_claim" => {
                let last = bytes.len() - 1;
                bytes[last] ^= 1; // the body no longer matches x-acs-content-sha256
                cpfs_fuzz::v3_claim(&bytes)
            }
            _ => continue,
        };
        assert_ne!(
            verified,
            Some(true),
            "{target}: a changed request still verified"
        );
    }
}

#[test]
fn truncated_and_flipped_frames_never_panic() {
    for (target, _, bytes) in cpfs_fuzz::seeds() {
        for cut in 0..bytes.len() {
            cpfs_fuzz::run(target, &bytes[..cut]);
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            cpfs_fuzz::run(target, &b);
        }
    }
}

#[test]
fn corpus_and_artifacts_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut replayed = 0;
    for target in cpfs_fuzz::TARGETS {
        for dir in ["corpus", "artifacts"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for e in entries.flatten() {
                if e.path().is_file() {
                    let data = std::fs::read(e.path()).unwrap();
                    cpfs_fuzz::run(target, &data);
                    replayed += 1;
                }
            }
        }
    }
    println!("replayed {replayed} corpus and artifact inputs");
}
