//! The database's health as the worker sees it: writable, or paused by a whole-database
//! condition (`db::Condition`). Lanes report what their transactions meet and the housekeeping
//! probe what it finds; this keeps the state, the gauges and the pause counter, and logs one line
//! per change of state, however many lanes are waiting and however often they retry.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::metrics::WorkerMetrics;
use clerk_sync_store::db::{self, Condition, ErrorClass};

pub struct DbHealth {
    metrics: WorkerMetrics,
    /// The condition in force and since when; `None` while writes go through.
    paused: Mutex<Option<(Condition, Instant)>>,
}

impl DbHealth {
    pub fn new(metrics: WorkerMetrics) -> Self {
        Self { metrics, paused: Mutex::new(None) }
    }

    /// The condition in force, if any.
    pub fn condition(&self) -> Option<Condition> {
        self.paused.lock().unwrap().map(|(c, _)| c)
    }

    /// The database cannot take writes because of `condition`; `detail` says what it answered.
    pub fn failed(&self, condition: Condition, detail: &str) {
        let mut paused = self.paused.lock().unwrap();
        if paused.is_some_and(|(c, _)| c == condition) {
            return;
        }
        self.metrics.database_pauses.with_label_values(&[condition.as_str()]).inc();
        match paused.as_ref() {
            None => tracing::warn!(
                condition = condition.as_str(),
                error = detail,
                "database unavailable; pausing: messages stay unacknowledged and nothing is dead-lettered"
            ),
            Some((previous, since)) => tracing::warn!(
                condition = condition.as_str(),
                previous = previous.as_str(),
                paused_for = ?since.elapsed(),
                error = detail,
                "database still unavailable, for another reason"
            ),
        }
        let since = paused.map_or_else(Instant::now, |(_, since)| since);
        *paused = Some((condition, since));
        self.metrics.db_up.set(i64::from(!matches!(
            condition,
            Condition::Unreachable | Condition::Authentication | Condition::MissingDatabase
        )));
        self.metrics.set_state("paused");
    }

    /// A write went through: the pause, if any, is over.
    pub fn recovered(&self) {
        let mut paused = self.paused.lock().unwrap();
        if let Some((condition, since)) = paused.take() {
            tracing::info!(
                condition = condition.as_str(),
                paused_for = ?since.elapsed(),
                "database available again; consuming"
            );
            self.metrics.db_up.set(1);
            self.metrics.set_state_if_paused();
        }
    }

    /// The probe found nothing wrong: ends a pause it is able to judge (see
    /// [`Condition::probe_can_clear`]), so that an idle worker does not stay unready.
    fn probe_ok(&self) {
        if self.condition().is_some_and(Condition::probe_can_clear) {
            self.recovered();
        }
    }

    /// Runs the probe once and reports what it finds.
    pub async fn probe(&self, pool: &PgPool) {
        match tokio::time::timeout(Duration::from_secs(2), probe(pool)).await {
            Ok(Ok(None)) => {
                self.metrics.db_up.set(1);
                self.probe_ok();
            }
            Ok(Ok(Some((condition, detail)))) => self.failed(condition, detail),
            Ok(Err(e)) => match db::classify(&e) {
                ErrorClass::Outage(condition) => self.failed(condition, &db::setup::explain(&e)),
                _ => tracing::debug!(error = %db::setup::explain(&e), "database health probe failed"),
            },
            Err(_) => self.failed(Condition::Unreachable, "the health probe got no answer within 2 s"),
        }
    }
}

/// What a write of the worker would meet, found without writing: a read-only session, our
/// schema missing, or the privileges we need revoked. `None` if all is well.
async fn probe(pool: &PgPool) -> Result<Option<(Condition, &'static str)>, sqlx::Error> {
    let (read_only, schema, writable): (bool, bool, Option<bool>) = sqlx::query_as(
        "SELECT current_setting('transaction_read_only') = 'on',
                to_regclass('clerk.webhook_events') IS NOT NULL
                    AND EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                                WHERE n.nspname = 'clerk' AND p.proname = 'apply_changes'),
                CASE WHEN to_regclass('clerk.webhook_events') IS NULL THEN NULL
                     ELSE has_table_privilege('clerk.webhook_events', 'INSERT') END",
    )
    .fetch_one(pool)
    .await?;
    Ok(if read_only {
        Some((Condition::ReadOnly, "the session is read-only (transaction_read_only = on)"))
    } else if !schema {
        Some((Condition::SchemaMissing, "schema clerk is missing its tables or functions; run `clerk-sync migrate`"))
    } else if writable == Some(false) {
        Some((Condition::Permission, "the role may not insert into clerk.webhook_events"))
    } else {
        None
    })
}
