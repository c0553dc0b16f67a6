//! `sqlx::migrate!` embeds `migrations/` at compile time, but cargo does not know to rebuild when
//! a migration is added or edited; this tells it (what `sqlx migrate build-script` generates).

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
