//! When a long-running binary should stop: SIGTERM (what Kubernetes and docker send) or SIGINT
//! (Ctrl-C). The gateway and the worker both wait on [`signal`] next to their shutdown token.

/// Resolves on the first SIGTERM or SIGINT. If a handler cannot be installed, that signal is
/// simply not waited for (the other still is, and the caller's own token still works).
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::future::Future;
    use std::task::Poll;
    use std::time::Duration;

    use super::*;

    /// Sends `sig` to this test process with kill(1): the handlers are installed by then, so the
    /// signal is taken by tokio instead of ending the process.
    async fn resolves_on(sig: &str) {
        let mut waiting = std::pin::pin!(signal());
        // The first poll installs the handlers; it cannot be ready before a signal is sent.
        let first = std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        let status = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &std::process::id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("the signal ends the wait");
    }

    #[tokio::test]
    async fn the_wait_ends_on_sigterm() {
        resolves_on("TERM").await;
    }

    #[tokio::test]
    async fn the_wait_ends_on_sigint() {
        resolves_on("INT").await;
    }
}
