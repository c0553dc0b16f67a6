//! `reconcile --watch`: drift metrics and reruns on schedule.

use super::*;

#[tokio::test]
async fn reconcile_watch_serves_drift_metrics_and_reruns_on_schedule() {
    let db = TestDatabase::create("reconcile_watch").await;
    let pool = db.connect().await;
    db::migrate(&pool).await.unwrap();
    seed(&pool).await;
    let mut fake = clerk();
    fake.rate_limited_at.clear();
    fake.failed_at = 0;
    let fake = web::Data::new(fake);
    let (api_url, clerk_server) = start_fake(fake.clone()).await;
    let env = env("reconcile_watch")
        .await
        .with("DATABASE_URL", &db.url)
        .with("CLERK_SECRET_KEY", KEY)
        .with("CLERK_SYNC__CLERK__API_URL", &api_url);
    let mut child = env
        .command(&[
            "reconcile",
            "--users",
            "--watch",
            "--interval",
            "1s",
            "--rate",
            "500",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let metrics_url = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        let url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.split_whitespace().find(|w| w.starts_with("http://")).map(str::to_owned))
            .expect("the CLI says where it serves metrics");
        // Keep draining so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        url
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let scrape = || async { http.get(&metrics_url).send().await.ok()?.text().await.ok() };
    wait_until(Duration::from_secs(30), "two runs recorded", || async {
        scrape().await.is_some_and(|m| m.contains("clerk_sync_reconcile_runs_total{result=\"success\"} 2"))
    })
    .await;
    let text = scrape().await.unwrap();
    for line in [
        "clerk_sync_reconcile_drift{gap=\"missing\",kind=\"users\"} 50",
        "clerk_sync_reconcile_drift{gap=\"gone\",kind=\"users\"} 5",
        "clerk_sync_reconcile_drift{gap=\"orphaned\",kind=\"memberships\"} 0",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    for family in [
        "clerk_sync_reconcile_last_run_timestamp_seconds",
        "clerk_sync_reconcile_last_success_timestamp_seconds",
        "clerk_sync_reconcile_last_run_duration_seconds",
        "clerk_sync_reconcile_requests_total",
        "clerk_sync_reconcile_repaired_total",
    ] {
        assert!(text.contains(family), "{family} in\n{text}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    clerk_server.stop(true).await;
    env.cleanup().await;
    pool.close().await;
    db.drop_now().await;
}
