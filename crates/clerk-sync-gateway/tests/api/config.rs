//! The binary's configuration handling: `--check-config`, and every problem reported at once.

use std::process::Command;

use crate::helpers::SECRET;

fn gateway() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clerk-sync-gateway"));
    // An empty directory: no stray .env is read, and no inherited variable leaks in.
    cmd.current_dir(std::env::temp_dir()).env_clear();
    cmd
}

#[test]
fn check_config_prints_the_effective_configuration_with_secrets_redacted() {
    let out = gateway()
        .arg("--check-config")
        .env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
        .env("AMQP_URL", "amqp://svc:hunter2@rabbit:5672/%2f")
        .env("CLERK_SYNC__GATEWAY__LISTEN", "0.0.0.0:8088")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("listen = \"0.0.0.0:8088\""), "{stdout}");
    assert!(stdout.contains("amqp://svc:[redacted]@rabbit:5672/%2f"), "{stdout}");
    assert!(!stdout.contains("hunter2") && !stdout.contains(&SECRET[6..]), "{stdout}");
}

#[test]
fn an_invalid_configuration_exits_non_zero_listing_every_problem() {
    let out = gateway()
        .env("CLERK_SYNC__GATEWAY__LISTEN", "nowhere")
        .env("CLERK_SYNC__AMQP__CONFIRM_TIMEOUT", "never")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    for key in ["gateway.listen", "amqp.confirm_timeout", "webhook.signing_secret"] {
        assert!(stderr.contains(key), "{key} missing from\n{stderr}");
    }
}

#[test]
fn a_config_file_given_with_the_flag_is_layered_over_the_defaults() {
    let dir = std::env::temp_dir().join(format!("clerk-sync-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, "[gateway]\nmax_body_size = 2048\n").unwrap();
    let out = gateway()
        .args(["--check-config", "--config"])
        .arg(&path)
        .env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8(out.stdout).unwrap().contains("max_body_size = 2048"));
}
