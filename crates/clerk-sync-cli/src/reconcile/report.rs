//! What a run found and repaired, per kind and gap, and how it is printed: a table with the first
//! ids of each gap for a person, or JSON (`{"users": {"missing": n, ...}, ...}`) for a script.

use comfy_table::Table;
use serde_json::{Map, Value, json};

use super::kinds::{Gap, Kind};

/// One kind's findings.
#[derive(Debug)]
pub struct KindReport {
    pub kind: Kind,
    /// Objects read from Clerk.
    pub examined: u64,
    /// Objects Clerk sent that cannot be parsed (counted, not repaired).
    pub skipped_invalid: u64,
    pub found: [u64; 4],
    /// The first ids of each gap, at most `show` of them.
    pub samples: [Vec<String>; 4],
    /// Written by this run.
    pub repaired: [u64; 4],
    /// Not written because a newer version (a live webhook) or a deletion was already there.
    pub superseded: [u64; 4],
    show: usize,
}

impl KindReport {
    pub fn new(kind: Kind, show: usize) -> Self {
        Self {
            kind,
            examined: 0,
            skipped_invalid: 0,
            found: [0; 4],
            samples: Default::default(),
            repaired: [0; 4],
            superseded: [0; 4],
            show,
        }
    }

    pub fn found(&mut self, gap: Gap, id: &str) {
        self.found[gap.index()] += 1;
        let samples = &mut self.samples[gap.index()];
        if samples.len() < self.show {
            samples.push(id.to_owned());
        }
    }

    pub fn drift(&self) -> u64 {
        self.found.iter().sum()
    }

    /// Gaps found and neither repaired nor superseded (cut by `--limit`, or report mode).
    pub fn left(&self) -> u64 {
        Gap::ALL.iter().map(|g| self.found[g.index()] - self.repaired[g.index()] - self.superseded[g.index()]).sum()
    }
}

/// A whole run.
#[derive(Debug)]
pub struct RunReport {
    pub kinds: Vec<KindReport>,
    pub fixed: bool,
    pub requests: u64,
    pub rate_limited: u64,
    pub duration: std::time::Duration,
}

impl RunReport {
    pub fn drift(&self) -> u64 {
        self.kinds.iter().map(KindReport::drift).sum()
    }

    pub fn left(&self) -> u64 {
        self.kinds.iter().map(KindReport::left).sum()
    }

    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        let (mut ids, mut repaired) = (Map::new(), Map::new());
        for k in &self.kinds {
            let counts = |v: &[u64; 4]| -> Value {
                k.kind.gaps().iter().map(|g| (g.name().to_owned(), json!(v[g.index()]))).collect::<Map<_, _>>().into()
            };
            out.insert(k.kind.name().to_owned(), counts(&k.found));
            ids.insert(
                k.kind.name().to_owned(),
                k.kind
                    .gaps()
                    .iter()
                    .map(|g| (g.name().to_owned(), json!(k.samples[g.index()])))
                    .collect::<Map<_, _>>()
                    .into(),
            );
            if self.fixed {
                repaired.insert(k.kind.name().to_owned(), counts(&k.repaired));
            }
        }
        out.insert("first_ids".to_owned(), ids.into());
        if self.fixed {
            out.insert("repaired".to_owned(), repaired.into());
            out.insert("left".to_owned(), json!(self.left()));
        }
        out.insert("requests".to_owned(), json!(self.requests));
        out.insert("rate_limited".to_owned(), json!(self.rate_limited));
        out.insert("duration_seconds".to_owned(), json!(self.duration.as_secs_f64()));
        out.into()
    }

    pub fn print_table(&self) {
        let mut table = Table::new();
        let mut header = vec!["kind", "examined", "gap", "found"];
        if self.fixed {
            header.extend(["repaired", "newer here"]);
        }
        header.push("first ids");
        table.set_header(header);
        for k in &self.kinds {
            for g in k.kind.gaps() {
                let i = g.index();
                let mut row =
                    vec![k.kind.name().to_owned(), k.examined.to_string(), g.name().to_owned(), k.found[i].to_string()];
                if self.fixed {
                    row.extend([k.repaired[i].to_string(), k.superseded[i].to_string()]);
                }
                let more = if k.found[i] > k.samples[i].len() as u64 { ", …" } else { "" };
                row.push(format!("{}{more}", k.samples[i].join(", ")));
                table.add_row(row);
            }
        }
        println!("{table}");
        let invalid: u64 = self.kinds.iter().map(|k| k.skipped_invalid).sum();
        if invalid > 0 {
            println!("{invalid} object(s) from Clerk could not be parsed and were skipped (see the log).");
        }
        let summary = format!(
            "{} request(s) to Clerk ({} answered 429) in {:.1}s.",
            self.requests,
            self.rate_limited,
            self.duration.as_secs_f64()
        );
        match (self.fixed, self.drift(), self.left()) {
            (_, 0, _) => println!("In sync: no drift. {summary}"),
            (false, n, _) => println!("Drift: {n} gap(s). Run again with --fix to repair them. {summary}"),
            (true, n, 0) => println!("Repaired: {n} gap(s) handled, nothing left. {summary}"),
            (true, n, left) => println!("Repaired part of {n} gap(s); {left} left (--limit). {summary}"),
        }
    }
}
