//! How a binary reports the error that stops it: one sentence a person can act on.
//!
//! An error chain printed naively repeats itself (a wrapper that quotes its cause, then the
//! cause again) and can run over several lines. [`sentence`] joins the chain with `: `, leaves
//! out a cause whose text the sentence already holds, and keeps it on one line. Naming the
//! target (host, port, database; never a password) is each boundary's job, in its error type.

use std::process::ExitCode;

/// The chain of `error` as one line, without repeated parts.
pub fn sentence(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        let text = without_server_line(&text);
        if text.is_empty() || out.contains(text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text);
    }
    out
}

/// Drops the " at line N" that sqlx appends to a Postgres error: the line of the server's C source
/// that raised it, which means nothing to the person reading. (This crate does not link sqlx: the
/// gateway must not; the suffix is recognised as text.)
fn without_server_line(text: &str) -> &str {
    match text.rsplit_once(" at line ") {
        Some((head, line)) if !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => text,
    }
}

/// For a service: logs `error` as `what` (the log is what operators search), prints it to stderr
/// as one line, and returns the exit code.
pub fn exit(what: &str, error: &anyhow::Error) -> ExitCode {
    let line = sentence(error);
    tracing::error!(error = %line, "{what}");
    eprintln!("error: {line}");
    ExitCode::FAILURE
}

/// For a command run by a person: prints `error` to stderr as one line and returns the exit code.
pub fn report(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", sentence(error));
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_the_message_already_quotes_is_not_repeated_and_lines_are_joined() {
        let inner = anyhow::anyhow!("database \"x\" does not exist");
        let e = inner.context("error returned from database: database \"x\" does not exist");
        assert_eq!(sentence(&e), "error returned from database: database \"x\" does not exist");
        let e = anyhow::anyhow!("connection refused\n(os error 111)").context("cannot connect to 127.0.0.1:1");
        assert_eq!(sentence(&e), "cannot connect to 127.0.0.1:1: connection refused (os error 111)");
        let e = anyhow::anyhow!("error returned from database: column \"x\" does not exist at line 2521");
        assert_eq!(sentence(&e), "error returned from database: column \"x\" does not exist");
        let e = anyhow::anyhow!("expected value at line 1 column 2");
        assert_eq!(sentence(&e), "expected value at line 1 column 2", "only a bare trailing line number goes");
    }
}
