//! Logging: `tracing` with a text or JSON formatter, filtered by `log.level` unless `RUST_LOG` is set.
//! Nothing here logs bodies or secrets; call sites only ever record ids, types and outcomes.
//!
//! Started by each binary's `main` after the configuration loaded (loading itself logs nothing),
//! so the binary picks where logs go: a service's stdout, or the CLI's stderr, whose stdout is
//! for output (`--json`) that scripts parse.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::settings::{LogFormat, LogSettings};

/// Where log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// The services: one stream for the container runtime to collect.
    Stdout,
    /// The operator CLI: stdout carries the command's output.
    Stderr,
}

/// Installs the global subscriber. A second call (tests start several apps) is a no-op.
pub fn init(log: &LogSettings, sink: Sink) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = match sink {
        Sink::Stdout => BoxMakeWriter::new(std::io::stdout),
        Sink::Stderr => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true).with_writer(writer);
    let _ = match log.format {
        LogFormat::Json => builder.json().with_current_span(true).flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// For tests: logs to the test harness's captured output, at `RUST_LOG` or `warn`.
pub fn init_for_tests() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}
