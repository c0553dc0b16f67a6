//! Renders the effective configuration for `--check-config`: the same shape as `default.toml`, with
//! signing secrets replaced by a count and passwords cut out of URLs.

use std::fmt::Write;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::{LogFormat, Settings};

/// `amqp://user:pass@host/` -> `amqp://user:[redacted]@host/`. A URL without a password is kept.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "[redacted: not a URL]".into() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:[redacted]@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// A comma-separated list of URLs, each redacted.
fn redact_urls(list: &str) -> String {
    list.split(',').map(|url| redact_url(url.trim())).collect::<Vec<_>>().join(",")
}

fn d(duration: Duration) -> String {
    format!("\"{}\"", humantime::format_duration(duration))
}

fn s(value: &str) -> String {
    format!("{value:?}")
}

pub(super) fn render(cfg: &Settings) -> String {
    let secrets = match cfg.webhook.signing_secrets.len() {
        0 => "\"\" # not set".to_owned(),
        n => format!("\"[redacted: {n} secret(s)]\""),
    };
    let sections: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("webhook", vec![("signing_secret", secrets)]),
        (
            "amqp",
            vec![
                ("url", s(&redact_urls(cfg.amqp.url.expose_secret()))),
                ("heartbeat", d(cfg.amqp.heartbeat)),
                ("connect_timeout", d(cfg.amqp.connect_timeout)),
                ("prefix", s(&cfg.amqp.prefix)),
                ("confirm_timeout", d(cfg.amqp.confirm_timeout)),
                ("publisher_channels", cfg.amqp.publisher_channels.to_string()),
                ("reconnect_min_backoff", d(cfg.amqp.reconnect_min_backoff)),
                ("reconnect_max_backoff", d(cfg.amqp.reconnect_max_backoff)),
                ("delivery_limit", cfg.amqp.delivery_limit.to_string()),
                ("quorum_initial_group_size", cfg.amqp.quorum_initial_group_size.to_string()),
            ],
        ),
        (
            "gateway",
            vec![
                ("listen", s(&cfg.gateway.listen.to_string())),
                ("admin_listen", s(&cfg.gateway.admin_listen.to_string())),
                ("max_body_size", cfg.gateway.max_body_size.to_string()),
                ("max_buffered_bytes", cfg.gateway.max_buffered_bytes.to_string()),
                ("request_timeout", d(cfg.gateway.request_timeout)),
                ("retry_after", d(cfg.gateway.retry_after)),
                ("http_workers", cfg.gateway.http_workers.to_string()),
                ("max_connections", cfg.gateway.max_connections.to_string()),
                ("shutdown_timeout", d(cfg.gateway.shutdown_timeout)),
            ],
        ),
        (
            "worker",
            vec![
                ("admin_listen", s(&cfg.worker.admin_listen.to_string())),
                ("prefetch", cfg.worker.prefetch.to_string()),
                ("batch_size", cfg.worker.batch_size.to_string()),
                ("batch_linger", d(cfg.worker.batch_linger)),
                ("concurrency", cfg.worker.concurrency.to_string()),
                ("max_attempts", cfg.worker.max_attempts.to_string()),
                (
                    "retry_delays",
                    s(&cfg
                        .worker
                        .retry_delays
                        .iter()
                        .map(|x| humantime::format_duration(*x).to_string())
                        .collect::<Vec<_>>()
                        .join(",")),
                ),
                ("event_retention", d(cfg.worker.event_retention)),
                ("keep_history", s(&cfg.worker.keep_history.to_string())),
                ("shutdown_timeout", d(cfg.worker.shutdown_timeout)),
            ],
        ),
        (
            "database",
            vec![
                ("url", s(&redact_url(cfg.database.url.expose_secret()))),
                ("max_connections", cfg.database.max_connections.to_string()),
                ("acquire_timeout", d(cfg.database.acquire_timeout)),
            ],
        ),
        (
            "clerk",
            vec![
                ("api_url", s(&cfg.clerk.api_url)),
                (
                    "secret_key",
                    if cfg.clerk.secret_key.expose_secret().is_empty() {
                        "\"\" # not set".to_owned()
                    } else {
                        s("[redacted]")
                    },
                ),
            ],
        ),
        (
            "log",
            vec![
                ("format", s(if cfg.log.format == LogFormat::Json { "json" } else { "text" })),
                ("level", s(&cfg.log.level)),
            ],
        ),
    ];
    let mut out = String::from("# effective configuration (secrets redacted)\n");
    for (name, entries) in sections {
        let _ = writeln!(out, "\n[{name}]");
        for (key, value) in entries {
            let _ = writeln!(out, "{key} = {value}");
        }
    }
    out
}
