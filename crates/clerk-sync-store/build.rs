//! Rebuilds this crate when a migration is added: `sqlx::migrate!` embeds `migrations/` but, on
//! stable Rust, only tracks the files it saw (`include_str!`), so a new file alone would leave the
//! binaries with the old list (and workers waiting for a schema version they never apply).
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
