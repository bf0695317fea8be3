//! Writes the seed inputs into `DIR/<target>/<name>` (bench/fuzz.sh gives
//! them to libFuzzer as its starting corpus).

fn main() {
    let dir = std::env::args().nth(1).expect("usage: write_seeds DIR");
    for (target, name, bytes) in cpfs_fuzz::seeds() {
        let d = std::path::Path::new(&dir).join(target);
        std::fs::create_dir_all(&d).expect("seed directory");
        std::fs::write(d.join(name), bytes).expect("seed file");
    }
}
