//! `reconcile --watch`: runs the reconcile every `--interval` and serves its metrics on
//! `--metrics-listen` (`GET /metrics`), since the CLI has no metrics listener otherwise.
//!
//! A schedule in a separate process rather than a periodic job in the worker: the worker scales
//! out with the queue, and a reconcile must run once per interval whatever the number of workers
//! (one Deployment with one replica, no leader election), its Clerk API budget does not grow with
//! the workers, and a long walk never competes with event processing for the worker's database
//! pool. A failed run is logged and counted, and the next one runs on schedule.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use prometheus::{Encoder, Gauge, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use sqlx::PgPool;

use super::kinds::Kind;
use super::report::RunReport;
use crate::backfill::client::ClerkApi;
use crate::cli::ReconcileArgs;
use crate::output::Output;

struct Metrics {
    registry: Registry,
    drift: IntGaugeVec,
    repaired: IntCounterVec,
    runs: IntCounterVec,
    requests: IntCounter,
    last_run: Gauge,
    last_success: Gauge,
    duration: Gauge,
}

impl Metrics {
    fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let drift = IntGaugeVec::new(
            Opts::new("clerk_sync_reconcile_drift", "Gaps the last successful reconcile found, by kind and gap."),
            &["kind", "gap"],
        )?;
        let repaired = IntCounterVec::new(
            Opts::new("clerk_sync_reconcile_repaired_total", "Gaps reconcile --fix repaired, by kind and gap."),
            &["kind", "gap"],
        )?;
        let runs =
            IntCounterVec::new(Opts::new("clerk_sync_reconcile_runs_total", "Reconcile runs by result."), &["result"])?;
        let requests = IntCounter::new("clerk_sync_reconcile_requests_total", "Requests sent to Clerk's Backend API.")?;
        let last_run = Gauge::new("clerk_sync_reconcile_last_run_timestamp_seconds", "When the last run ended.")?;
        let last_success =
            Gauge::new("clerk_sync_reconcile_last_success_timestamp_seconds", "When the last successful run ended.")?;
        let duration =
            Gauge::new("clerk_sync_reconcile_last_run_duration_seconds", "How long the last successful run took.")?;
        registry.register(Box::new(drift.clone()))?;
        registry.register(Box::new(repaired.clone()))?;
        registry.register(Box::new(runs.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(last_run.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        // Every series exists from the start, so an alert on a kind never silently lacks data.
        for kind in Kind::ALL {
            for gap in kind.gaps() {
                drift.with_label_values(&[kind.name(), gap.name()]).set(0);
                repaired.with_label_values(&[kind.name(), gap.name()]).inc_by(0);
            }
        }
        for result in ["success", "error"] {
            runs.with_label_values(&[result]).inc_by(0);
        }
        Ok(Self { registry, drift, repaired, runs, requests, last_run, last_success, duration })
    }

    fn record(&self, report: &RunReport, now: f64) {
        for k in &report.kinds {
            for gap in k.kind.gaps() {
                let labels = [k.kind.name(), gap.name()];
                self.drift.with_label_values(&labels).set(i64::try_from(k.found[gap.index()]).unwrap_or(i64::MAX));
                self.repaired.with_label_values(&labels).inc_by(k.repaired[gap.index()]);
            }
        }
        self.runs.with_label_values(&["success"]).inc();
        self.last_success.set(now);
        self.duration.set(report.duration.as_secs_f64());
    }

    fn text(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

async fn serve_metrics(metrics: web::Data<Arc<Metrics>>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(metrics.text())
}

pub async fn watch(
    pool: &PgPool,
    api: &ClerkApi,
    kinds: &[Kind],
    args: &ReconcileArgs,
    out: Output,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new()?);
    let data = web::Data::new(metrics.clone());
    let server =
        HttpServer::new(move || App::new().app_data(data.clone()).route("/metrics", web::get().to(serve_metrics)))
            .workers(1)
            .disable_signals()
            .shutdown_timeout(1)
            .bind(&args.metrics_listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {} for metrics: {e}", args.metrics_listen))?;
    let addr = server.addrs().first().copied();
    let server = server.run();
    let handle = server.handle();
    let served = tokio::spawn(server);
    if let Some(addr) = addr {
        eprintln!("reconcile: every {}, metrics on http://{addr}/metrics", humantime::format_duration(args.interval));
    }
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let before = api.requests();
        let run = tokio::select! {
            run = super::run_once(pool, api, kinds, args) => run,
            _ = &mut stop => break,
        };
        metrics.requests.inc_by(api.requests() - before);
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        metrics.last_run.set(now);
        match run {
            Ok(report) => {
                metrics.record(&report, now);
                super::print(&report, out);
            }
            Err(e) => {
                metrics.runs.with_label_values(&["error"]).inc();
                tracing::error!(error = %clerk_sync_core::fatal::sentence(&e), "reconcile run failed; retrying at the next interval");
                eprintln!("error: {}", clerk_sync_core::fatal::sentence(&e));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(args.interval.max(Duration::from_secs(1))) => {}
            _ = &mut stop => break,
        }
    }
    handle.stop(true).await;
    let _ = served.await;
    Ok(())
}
