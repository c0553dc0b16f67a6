use std::io::Write;

use secrecy::ExposeSecret;

use super::*;

const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_B: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn load(sources: &Sources) -> Result<Settings, ConfigError> {
    Settings::load(sources, &[])
}

fn keys(err: &ConfigError) -> Vec<String> {
    err.problems.iter().map(|p| p.key.split(' ').next().unwrap().to_owned()).collect()
}

#[test]
fn the_embedded_defaults_are_valid_and_match_the_documented_values() {
    let cfg = load(&Sources::default()).unwrap();
    assert_eq!(cfg.amqp_url(), "amqp://guest:guest@127.0.0.1:5672/%2f");
    assert_eq!(cfg.amqp.prefix, "clerk");
    assert_eq!(cfg.gateway.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(cfg.gateway.admin_listen.to_string(), "127.0.0.1:9091");
    assert_eq!(cfg.worker.admin_listen.to_string(), "127.0.0.1:9092");
    assert_eq!(cfg.gateway.max_body_size, 384 * 1024);
    assert_eq!(cfg.gateway.max_buffered_bytes, 32 * 1024 * 1024);
    assert_eq!(cfg.gateway.max_connections, 2048);
    assert_eq!(cfg.amqp.confirm_timeout, Duration::from_secs(5));
    assert_eq!(cfg.worker.event_retention, Duration::from_secs(30 * 24 * 3600));
    assert!(cfg.webhook.signing_secrets.is_empty());
}

#[test]
fn a_file_overrides_the_defaults_and_the_environment_overrides_the_file() {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    writeln!(file, "[gateway]\nlisten = \"0.0.0.0:7000\"\nmax_body_size = 2048\n[amqp]\nprefix = \"fromfile\"")
        .unwrap();
    let sources = Sources { file: Some(file.path().to_owned()), ..Default::default() }
        .with_env("CLERK_SYNC__GATEWAY__LISTEN", "127.0.0.1:7001");
    let cfg = load(&sources).unwrap();
    assert_eq!(cfg.gateway.listen.to_string(), "127.0.0.1:7001");
    assert_eq!(cfg.gateway.max_body_size, 2048);
    assert_eq!(cfg.amqp.prefix, "fromfile");
}

#[test]
fn a_missing_config_file_is_reported() {
    let sources = Sources { file: Some("/nonexistent/clerk-sync.toml".into()), ..Default::default() };
    let err = load(&sources).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/clerk-sync.toml"), "{err}");
}

#[test]
fn the_conventional_names_are_honoured() {
    let sources = Sources::default()
        .with_env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET_A)
        .with_env("AMQP_URL", "amqp://u:p@rabbit:5672/%2f")
        .with_env("DATABASE_URL", "postgres://app@db/app");
    let cfg = Settings::load(&sources, &[Requirement::SigningSecret]).unwrap();
    assert_eq!(cfg.webhook.signing_secrets.len(), 1);
    assert_eq!(cfg.amqp_url(), "amqp://u:p@rabbit:5672/%2f");
    assert_eq!(cfg.database.url.expose_secret(), "postgres://app@db/app");
}

#[test]
fn the_structured_variable_wins_over_the_conventional_name() {
    let sources = Sources::default()
        .with_env("AMQP_URL", "amqp://conventional/%2f")
        .with_env("CLERK_SYNC__AMQP__URL", "amqp://structured/%2f");
    assert_eq!(load(&sources).unwrap().amqp_url(), "amqp://structured/%2f");
}

#[test]
fn several_signing_secrets_separated_by_spaces_or_commas_are_all_kept() {
    let sources = Sources::default().with_env("CLERK_WEBHOOK_SIGNING_SECRET", format!(" {SECRET_A}, {SECRET_B} "));
    let cfg = load(&sources).unwrap();
    let got: Vec<&str> = cfg.webhook.signing_secrets.iter().map(|s| s.expose_secret()).collect();
    assert_eq!(got, vec![SECRET_A, SECRET_B]);
}

#[test]
fn the_gateway_requirement_reports_a_missing_secret() {
    let err = Settings::load(&Sources::default(), &[Requirement::SigningSecret]).unwrap_err();
    assert_eq!(keys(&err), vec!["webhook.signing_secret"]);
    assert!(err.to_string().contains("CLERK_WEBHOOK_SIGNING_SECRET"));
}

#[test]
fn every_problem_is_reported_at_once_with_its_key_and_never_the_secret() {
    let sources = Sources::default()
        .with_env("CLERK_SYNC__GATEWAY__LISTEN", "not-an-address")
        .with_env("CLERK_SYNC__GATEWAY__MAX_BODY_SIZE", "lots")
        .with_env("CLERK_SYNC__AMQP__CONFIRM_TIMEOUT", "soon")
        .with_env("CLERK_SYNC__AMQP__PREFIX", "bad prefix!")
        .with_env("CLERK_SYNC__AMQP__URL", "http://user:hunter2@x")
        .with_env("CLERK_SYNC__WORKER__BATCH_SIZE", "0")
        .with_env("CLERK_SYNC__LOG__FORMAT", "xml")
        .with_env("CLERK_SYNC__GATEWAY__LISTN", "typo")
        .with_env("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_!!notbase64 supersecretvalue");
    let err = load(&sources).unwrap_err();
    let mut got = keys(&err);
    got.sort();
    assert_eq!(
        got,
        vec![
            "amqp.confirm_timeout",
            "amqp.prefix",
            "amqp.url",
            "gateway.listen",
            "gateway.listn",
            "gateway.max_body_size",
            "log.format",
            "webhook.signing_secret",
            "webhook.signing_secret",
            "worker.batch_size",
        ]
    );
    let text = err.to_string();
    assert!(text.contains("CLERK_SYNC__GATEWAY__LISTEN"), "{text}");
    assert!(!text.contains("hunter2") && !text.contains("supersecretvalue"), "{text}");
}

#[test]
fn the_rendered_configuration_redacts_secrets_and_passwords() {
    let sources = Sources::default()
        .with_env("CLERK_WEBHOOK_SIGNING_SECRET", format!("{SECRET_A} {SECRET_B}"))
        .with_env("AMQP_URL", "amqps://svc:hunter2@rabbit:5671/prod?heartbeat=10")
        .with_env("DATABASE_URL", "postgres://app:pgpass@db/app")
        .with_env("CLERK_SECRET_KEY", "sk_live_topsecret");
    let text = load(&sources).unwrap().render_redacted();
    assert!(text.contains("[redacted: 2 secret(s)]"), "{text}");
    assert!(text.contains("amqps://svc:[redacted]@rabbit:5671/prod?heartbeat=10"), "{text}");
    assert!(text.contains("postgres://app:[redacted]@db/app"), "{text}");
    for secret in ["hunter2", "pgpass", "sk_live_topsecret", &SECRET_A[6..], &SECRET_B[6..]] {
        assert!(!text.contains(secret), "{text}");
    }
    // The rendering is itself a valid configuration file of the same shape.
    let parsed: toml::Table = text.parse().unwrap();
    assert!(parsed.contains_key("gateway") && parsed.contains_key("worker"));
}

#[test]
fn urls_without_a_password_are_left_alone() {
    assert_eq!(redact_url("postgres://postgres@127.0.0.1/db"), "postgres://postgres@127.0.0.1/db");
    assert_eq!(redact_url("amqp://h:5672/%2f"), "amqp://h:5672/%2f");
    assert_eq!(redact_url("amqp://a:b@h/v?x=@"), "amqp://a:[redacted]@h/v?x=@");
}

#[test]
fn admin_and_public_listeners_must_differ() {
    let sources = Sources::default()
        .with_env("CLERK_SYNC__GATEWAY__LISTEN", "127.0.0.1:9000")
        .with_env("CLERK_SYNC__GATEWAY__ADMIN_LISTEN", "127.0.0.1:9000");
    assert_eq!(keys(&load(&sources).unwrap_err()), vec!["gateway.admin_listen"]);
}

#[test]
fn the_body_budget_must_hold_at_least_one_body_of_the_largest_size() {
    let sources = Sources::default()
        .with_env("CLERK_SYNC__GATEWAY__MAX_BODY_SIZE", "65536")
        .with_env("CLERK_SYNC__GATEWAY__MAX_BUFFERED_BYTES", "65535");
    assert_eq!(keys(&load(&sources).unwrap_err()), vec!["gateway.max_buffered_bytes"]);
    let zero = Sources::default().with_env("CLERK_SYNC__GATEWAY__MAX_BUFFERED_BYTES", "0");
    assert!(keys(&load(&zero).unwrap_err()).contains(&"gateway.max_buffered_bytes".to_owned()));
    let equal = Sources::default()
        .with_env("CLERK_SYNC__GATEWAY__MAX_BODY_SIZE", "65536")
        .with_env("CLERK_SYNC__GATEWAY__MAX_BUFFERED_BYTES", "65536");
    assert_eq!(load(&equal).unwrap().gateway.max_buffered_bytes, 65536);
}

#[test]
fn amqp_url_takes_a_list_of_nodes_checks_each_and_redacts_each_password() {
    let list = "amqp://svc:hunter2@rabbit-0:5672/%2f, amqp://svc:hunter2@rabbit-1:5672/%2f";
    let cfg = load(&Sources::default().with_env("AMQP_URL", list)).unwrap();
    let text = cfg.render_redacted();
    assert!(text.contains("amqp://svc:[redacted]@rabbit-0:5672/%2f,amqp://svc:[redacted]@rabbit-1:5672/%2f"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    let bad = "amqp://svc:hunter2@rabbit-0:5672/%2f,rabbit-1:hunter2";
    let err = load(&Sources::default().with_env("AMQP_URL", bad)).unwrap_err();
    assert_eq!(keys(&err), vec!["amqp.url"]);
    let text = err.to_string();
    assert!(text.contains("URL #2 of 2") && !text.contains("hunter2"), "{text}");
}
