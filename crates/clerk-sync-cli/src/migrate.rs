//! `clerk-sync migrate`: creates the database when the server does not have it yet, then applies
//! the pending migrations (the worker's `migrate` does the same; both use `db::setup`).

use clerk_sync_core::settings::Settings;
use clerk_sync_store::db;

use crate::output::{self, Output};

pub async fn migrate(settings: &Settings, check: bool, out: Output) -> anyhow::Result<()> {
    let report = db::setup::migrate(&settings.database, check).await?;
    let pending = &report.migrations;
    let database = &report.target.database;
    if out.json {
        let list: Vec<_> = pending.iter().map(|(v, d)| serde_json::json!({"version": v, "description": d})).collect();
        output::print_json(&serde_json::json!({
            "database": database,
            if check { "database_missing" } else { "database_created" }: report.database_missing,
            if check { "pending" } else { "applied" }: list,
        }));
    } else {
        match (report.database_missing, check) {
            (true, false) => println!("created database \"{database}\""),
            (true, true) => println!("database \"{database}\" does not exist yet; `clerk-sync migrate` creates it"),
            _ => {}
        }
        for (version, description) in pending {
            println!("{} {version} {description}", if check { "pending:" } else { "applied:" });
        }
        if check && !pending.is_empty() {
            println!("{} migration(s) pending; run `clerk-sync migrate`", pending.len());
        } else {
            println!("the schema of {} is up to date", report.target);
        }
    }
    anyhow::ensure!(!check || pending.is_empty(), "{} migration(s) pending on {}", pending.len(), report.target);
    Ok(())
}
