//! `clerk-sync --check-config` without a subcommand, as `--help` promises, and the usage error
//! without either.

use std::process::{Command, Output};

use crate::helpers::SECRET;

const CLERK_SECRET_KEY: &str = "sk_test_c2VjcmV0LWtleS1mb3ItY2hlY2s";

/// The real binary in an empty directory (no stray `.env`) with only `vars` in its environment.
fn clerk_sync(args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clerk-sync"))
        .current_dir(std::env::temp_dir())
        .env_clear()
        .envs(vars.iter().copied())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_config_alone_prints_the_configuration_with_every_secret_redacted_and_exits_zero() {
    let vars = [
        ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
        ("AMQP_URL", "amqp://svc:hunter2@rabbit:5672/%2f"),
        ("DATABASE_URL", "postgres://app:correct-horse@db:5432/app"),
        ("CLERK_SECRET_KEY", CLERK_SECRET_KEY),
        ("CLERK_SYNC__AMQP__PREFIX", "checked"),
    ];
    let out = clerk_sync(&["--check-config"], &vars);
    let (stdout, stderr) = (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap());
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("prefix = \"checked\""), "{stdout}");
    assert!(stdout.contains("amqp://svc:[redacted]@rabbit:5672/%2f"), "{stdout}");
    assert!(stdout.contains("postgres://app:[redacted]@db:5432/app"), "{stdout}");
    assert!(stdout.contains("signing_secret = \"[redacted: 1 secret(s)]\""), "{stdout}");
    for secret in ["hunter2", "correct-horse", &SECRET[6..], &CLERK_SECRET_KEY[8..]] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} printed:\n{stdout}\n{stderr}");
    }
    assert!(stderr.contains("configuration is valid"), "{stderr}");
}

#[test]
fn check_config_alone_reports_an_invalid_configuration_with_exit_code_2() {
    let out = clerk_sync(&["--check-config"], &[("CLERK_SYNC__AMQP__CONFIRM_TIMEOUT", "never")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("amqp.confirm_timeout"));
}

#[test]
fn without_a_subcommand_or_check_config_the_cli_exits_with_a_usage_error() {
    let out = clerk_sync(&[], &[]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout without a command");
    assert!(stderr.contains("a subcommand is required") && stderr.contains("Usage: clerk-sync"), "{stderr}");
}
