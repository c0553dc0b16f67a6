//! The benchmark phases and what they share: the run's environment, its options, the collected
//! table rows and JSON details, and the ceilings measured earlier in the same run (so each figure
//! is printed next to its own ceiling).

mod dlq;
mod e2e;
mod gateway;
mod reconcile;
mod soak;
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
use crate::report::{Row, Target};
use crate::workload::{self, Workload};

pub use dlq::dlq;
pub use e2e::e2e;
pub use gateway::broker_and_gateway;
pub use reconcile::reconcile;
pub use soak::{SoakOptions, soak};
pub use worker::{database, workers};

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
                .target(Target::AtMost(10.0))
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
            self.rows.push(Row::new("gateway peak RSS under load", mib, "MiB").target(Target::AtMost(64.0)));
        }
        if self.worker_rss_kib > 0 {
            let mib = self.worker_rss_kib as f64 / 1024.0;
            self.rows.push(Row::new("worker peak RSS under load", mib, "MiB").target(Target::AtMost(128.0)));
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
