//! Where the CLI's logs go: stderr, so that `--json` output on stdout stays one JSON document a
//! script can parse, whatever the log level.

use clerk_sync_core::amqp::now_ms;

use crate::helpers::env;

#[tokio::test]
async fn json_output_parses_while_logging_at_trace_because_logs_go_to_stderr() {
    let env = env("cli-logs").await.with("CLERK_SYNC__LOG__LEVEL", "trace");
    env.dead_letter("msg_log", "user.updated", "invalid_payload", now_ms()).await;
    let out = env.run(&["--json", "dlq", "stats"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(stats["count"], 1);
    assert!(stderr.contains("TRACE") || stderr.contains("DEBUG"), "logging is on, on stderr: {stderr}");
    env.cleanup().await;
}
