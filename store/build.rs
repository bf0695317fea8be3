// `sqlx::migrate!` embeds the migration files at compile time, but Cargo
// cannot see a new file in a directory by itself: tell it to rebuild when
// either migration directory changes.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
    println!("cargo:rerun-if-changed=../migrations/sqlite");
    println!("cargo:rerun-if-changed=../migrations/postgres");
}
