//! The benchmark phases and what they share: the run's environment, its options, the collected
//! table rows and JSON details, and the ceilings measured earlier in the same run (so each figure
//! is printed next to its own ceiling).

mod catalogue;
mod cluster;
mod dlq;
mod e2e;
mod feed;
mod gateway;
mod history;
mod reconcile;
mod soak;
pub mod targets;
mod tuning;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::{Map, Value, json};

use crate::corpus::Corpus;
use crate::env::BenchEnv;
use crate::procs::Paths;
use crate::report::Row;
use crate::workload::{self, Workload};

pub use cluster::cluster;
pub use dlq::dlq;
pub use e2e::e2e;
pub use feed::feed;
pub use gateway::broker_and_gateway;
pub use history::history;
pub use reconcile::reconcile;
pub use soak::{SoakOptions, soak};
pub use worker::{database, workers};

/// What a `clerk-sync-bench` command measures: every phase (`All`, what `make bench` runs) or one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Suite {
    All,
    Broker,
    Gateway,
    Database,
    Worker,
    E2e,
    Dlq,
    Reconcile,
    Feed,
    History,
    /// Against a three-node RabbitMQ 4.0 cluster beside a single 4.0 node (`make bench-cluster`).
    Cluster,
    Micro,
}

impl Suite {
    /// The subcommand's name, as the report and `results.json` show it.
    pub fn name(self) -> &'static str {
        match self {
            Suite::All => "all",
            Suite::Broker => "broker",
            Suite::Gateway => "gateway",
            Suite::Database => "database",
            Suite::Worker => "worker",
            Suite::E2e => "e2e",
            Suite::Dlq => "dlq",
            Suite::Reconcile => "reconcile",
            Suite::Feed => "feed",
            Suite::History => "history",
            Suite::Cluster => "cluster",
            Suite::Micro => "micro",
        }
    }

    /// Starts the release gateway and/or worker.
    pub fn needs_services(self) -> bool {
        matches!(self, Suite::All | Suite::Gateway | Suite::Worker | Suite::E2e | Suite::Feed | Suite::Cluster)
    }

    /// Runs the release `clerk-sync`.
    pub fn needs_cli(self) -> bool {
        matches!(self, Suite::All | Suite::Dlq | Suite::Reconcile | Suite::History)
    }

    /// Whether this suite runs `phase`; `ceilings` is `Options::ceilings` (the broker and
    /// database ceilings the gateway and worker phases measure first unless told not to).
    pub fn runs(self, phase: Phase, ceilings: bool) -> bool {
        use Suite as S;
        match phase {
            Phase::Broker => matches!(self, S::All | S::Broker) || (self == S::Gateway && ceilings),
            Phase::Gateway => matches!(self, S::All | S::Gateway),
            Phase::Database => matches!(self, S::All | S::Database) || (self == S::Worker && ceilings),
            Phase::Micro => matches!(self, S::All | S::Micro),
            Phase::Worker => matches!(self, S::All | S::Worker),
            Phase::E2e => matches!(self, S::All | S::E2e),
            Phase::Dlq => matches!(self, S::All | S::Dlq),
            Phase::Reconcile => matches!(self, S::All | S::Reconcile),
            Phase::Feed => matches!(self, S::All | S::Feed),
            // Its own suite: filling 6 million events takes minutes, more than all the rest of `all`.
            Phase::History => self == S::History,
            // Its own suite: it needs the RabbitMQ 4.0 nodes of `scripts/cluster.sh` running.
            Phase::Cluster => self == S::Cluster,
        }
    }
}

/// One step of a run, in the order `all` runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Micro,
    Broker,
    Gateway,
    Database,
    Worker,
    E2e,
    Dlq,
    Reconcile,
    Feed,
    History,
    Cluster,
}

/// Everything the phases can be told; `Default` is what `make bench` runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Options {
    /// Measured seconds per closed-loop and open-loop point (after the warm-up).
    pub secs: f64,
    pub warmup_secs: f64,
    pub concurrency: Vec<usize>,
    pub rates: Vec<f64>,
    /// Connections the open-loop runs spread their requests over.
    pub open_connections: usize,
    pub events: usize,
    pub workers: Vec<usize>,
    pub e2e_rate: f64,
    pub e2e_secs: f64,
    /// Measure the broker / database ceilings before the gateway / worker phases that use them.
    pub ceilings: bool,
    /// Alternating broker-then-gateway pairs at the concurrency of the gateway-to-broker target;
    /// the medians are reported, so one stall of the shared broker does not decide the ratio.
    pub rounds: usize,
    /// Channel counts the broker ceiling tries at each closed-loop point; the best one is used.
    pub ceiling_channels: Vec<usize>,
    /// Publisher channel counts to run the gateway with too, against the same ceiling (tuning).
    pub gateway_channels: Vec<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            secs: 7.0,
            warmup_secs: 1.0,
            concurrency: vec![16, 64, 256],
            rates: vec![2_000.0, 5_000.0],
            open_connections: 64,
            events: 200_000,
            workers: vec![1, 2],
            e2e_rate: 2_000.0,
            e2e_secs: 12.0,
            ceilings: true,
            rounds: 3,
            ceiling_channels: vec![1, 2, 4, 8, 16],
            gateway_channels: Vec::new(),
        }
    }
}

impl Options {
    fn point(&self) -> (Duration, Duration) {
        (Duration::from_secs_f64(self.warmup_secs), Duration::from_secs_f64(self.secs))
    }
}

pub struct Bench {
    pub env: BenchEnv,
    pub paths: Paths,
    pub opts: Options,
    pub amqp: lapin::Connection,
    pub channel: lapin::Channel,
    pub rows: Vec<Row>,
    pub details: Map<String, Value>,
    /// Broker ceiling (messages/s and p99 ms) by concurrency, measured in this run.
    pub broker_ceiling: BTreeMap<usize, (f64, f64)>,
    /// Database ceiling (events/s), measured in this run.
    pub db_ceiling: Option<f64>,
    pub gateway_rss_kib: u64,
    pub worker_rss_kib: u64,
    workload: Option<Arc<Workload>>,
    corpus: Option<Arc<Corpus>>,
}

impl Bench {
    pub async fn setup(paths: Paths, opts: Options) -> anyhow::Result<Self> {
        let env = BenchEnv::create().await?;
        let amqp = match env.amqp().await {
            Ok(c) => c,
            Err(e) => {
                env.cleanup().await;
                return Err(e);
            }
        };
        let channel = amqp.create_channel().await?;
        env.declare(&channel).await?;
        eprintln!("bench run {}: queues {}.*, database {}", env.run_id, env.prefix, env.db_name);
        Ok(Self {
            env,
            paths,
            opts,
            amqp,
            channel,
            rows: Vec::new(),
            details: Map::new(),
            broker_ceiling: BTreeMap::new(),
            db_ceiling: None,
            gateway_rss_kib: 0,
            worker_rss_kib: 0,
            workload: None,
            corpus: None,
        })
    }

    /// The gateway-side events: 4,096 templates cycled through.
    pub fn corpus(&mut self) -> Arc<Corpus> {
        self.corpus.get_or_insert_with(|| Arc::new(Corpus::realistic(4_096, 20_000, 1))).clone()
    }

    /// The worker-side workload, generated once per run.
    pub fn workload(&mut self) -> Arc<Workload> {
        if self.workload.is_none() {
            let started = std::time::Instant::now();
            let w = workload::generate(self.opts.events, 2, &self.env.run_id);
            eprintln!("generated {} workload events in {:.1} s", w.messages.len(), started.elapsed().as_secs_f64());
            self.details.insert("workload".into(), json!(w.shape));
            self.workload = Some(Arc::new(w));
        }
        self.workload.clone().unwrap_or_else(|| unreachable!())
    }

    pub fn detail(&mut self, key: &str, value: Value) {
        match self.details.get_mut(key) {
            Some(Value::Array(items)) => items.push(value),
            _ => {
                self.details.insert(key.to_owned(), Value::Array(vec![value]));
            }
        }
    }

    /// Messages ready in the main queue.
    pub async fn queue_depth(&self) -> anyhow::Result<u32> {
        let opts = QueueDeclareOptions { passive: true, ..Default::default() };
        let q = self.channel.queue_declare(self.env.topology().queue().into(), opts, FieldTable::default()).await?;
        Ok(q.message_count())
    }

    pub async fn purge(&self) -> anyhow::Result<()> {
        self.env.purge(&self.channel).await?;
        Ok(())
    }

    /// The micro-benchmarks, timed in-process (Criterion runs the same code under `cargo bench`).
    pub fn micro(&mut self) -> anyhow::Result<()> {
        let workload = self.workload();
        let batch = self.env.defaults.worker.batch_size;
        let m = crate::micro::run(&workload.messages, batch)?;
        eprintln!(
            "micro: verify+parse {:.2} µs (verify {:.2}, parse {:.2}), batch of {} {:.0} µs",
            m.verify_parse_us, m.verify_us, m.parse_us, m.batch_size, m.build_batch_us
        );
        self.rows.push(
            Row::new(format!("verify + parse, {} B event", m.body_bytes), m.verify_parse_us, "µs")
                .goal(&targets::VERIFY_PARSE_US)
                .note(format!("Svix verification {:.2} µs + envelope parsing {:.2} µs", m.verify_us, m.parse_us)),
        );
        self.rows.push(
            Row::new(
                format!("build a batch of {} (parse + columns), per event", m.batch_size),
                m.build_batch_us_per_event,
                "µs",
            )
            .note(format!("{:.0} µs per batch", m.build_batch_us)),
        );
        self.details.insert("micro".into(), json!(m));
        Ok(())
    }

    /// Peak-memory rows, for the services this run started.
    pub fn memory_rows(&mut self) {
        if self.gateway_rss_kib > 0 {
            let mib = self.gateway_rss_kib as f64 / 1024.0;
            self.rows.push(Row::new("gateway peak RSS under load", mib, "MiB").goal(&targets::GATEWAY_RSS_MIB));
        }
        if self.worker_rss_kib > 0 {
            let mib = self.worker_rss_kib as f64 / 1024.0;
            self.rows.push(Row::new("worker peak RSS under load", mib, "MiB").goal(&targets::WORKER_RSS_MIB));
        }
    }

    /// Closes the broker connection and, unless `keep`, deletes the queues and the database.
    pub async fn teardown(self, keep: bool) -> (Vec<Row>, Map<String, Value>) {
        let _ = self.amqp.close(200, "bench done".into()).await;
        if keep {
            eprintln!("kept queues {}.* and database {} (--keep)", self.env.prefix, self.env.db_url);
        } else {
            self.env.cleanup().await;
        }
        (self.rows, self.details)
    }
}

#[cfg(test)]
mod tests {
    use super::{Phase, Suite};

    #[test]
    fn all_runs_every_phase_but_the_history_and_a_single_suite_runs_its_own_and_the_ceiling_it_is_judged_against() {
        let phases = [
            Phase::Micro,
            Phase::Broker,
            Phase::Gateway,
            Phase::Database,
            Phase::Worker,
            Phase::E2e,
            Phase::Dlq,
            Phase::Reconcile,
            Phase::Feed,
            Phase::History,
            Phase::Cluster,
        ];
        assert!(phases.iter().all(|p| Suite::All.runs(*p, true) == !matches!(p, Phase::History | Phase::Cluster)));
        let ran =
            |s: Suite, ceilings: bool| phases.iter().filter(|p| s.runs(**p, ceilings)).copied().collect::<Vec<_>>();
        assert_eq!(ran(Suite::Gateway, true), [Phase::Broker, Phase::Gateway]);
        assert_eq!(ran(Suite::Gateway, false), [Phase::Gateway]);
        assert_eq!(ran(Suite::Worker, true), [Phase::Database, Phase::Worker]);
        assert_eq!(ran(Suite::Broker, false), [Phase::Broker]);
        assert_eq!(ran(Suite::Dlq, true), [Phase::Dlq]);
        assert_eq!(ran(Suite::History, true), [Phase::History]);
        assert_eq!(ran(Suite::Cluster, true), [Phase::Cluster]);
    }
}
