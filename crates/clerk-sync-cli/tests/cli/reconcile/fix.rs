//! `reconcile` report and `--fix` against every kind of gap while live webhooks race it.

use super::*;

#[tokio::test]
async fn reconcile_reports_every_gap_fixes_them_while_webhooks_race_and_then_reports_none() {
    let db = TestDatabase::create("reconcile").await;
    let pool = db.connect().await;
    db::migrate(&pool).await.unwrap();
    seed(&pool).await;
    let fake = web::Data::new(clerk());
    let (api_url, clerk_server) = start_fake(fake.clone()).await;
    let env = env("reconcile")
        .await
        .with("DATABASE_URL", &db.url)
        .with("CLERK_SECRET_KEY", KEY)
        .with("CLERK_SYNC__CLERK__API_URL", &api_url)
        // The retry warnings are logged to stdout, where --json prints too.
        .with("CLERK_SYNC__LOG__LEVEL", "error");
    let args = ["--json", "reconcile", "--rate", "200", "--show", "3"];

    // A person's view of the same report (printed for `--no-capture`).
    let table = env.run(&args[1..]).await;
    assert_eq!(table.status.code(), Some(1));
    assert!(stdout(&table).contains("user_gone_0, user_gone_1, user_gone_2, …"), "{}", stdout(&table));
    println!("$ clerk-sync reconcile\n{}{}", stdout(&table), stderr(&table));

    *fake.served.lock().unwrap() = 0; // the 429s and the 502 again
    let report = env.run(&args).await;
    assert_eq!(report.status.code(), Some(1), "drift exits 1: {}", stderr(&report));
    assert!(stderr(&report).contains("--fix"), "{}", stderr(&report));
    let report: Value = serde_json::from_slice(&report.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} / {}", stdout(&report), stderr(&report)));
    assert_eq!(
        counts(&report),
        json!({
            "users": {"missing": 50, "stale": 10, "gone": 5},
            "organizations": {"missing": 2, "stale": 1, "gone": 1},
            "memberships": {"missing": 2, "stale": 1, "gone": 1, "orphaned": 1},
        })
    );
    assert_eq!(report["first_ids"]["users"]["gone"], json!(["user_gone_0", "user_gone_1", "user_gone_2"]));
    assert_eq!(report["first_ids"]["memberships"]["orphaned"], json!(["orgmem_orphan"]));
    assert!(report["rate_limited"].as_u64().unwrap() >= 2, "the fake's 429s were met: {report}");
    assert_eq!(
        scalar::<i64>(&pool, "SELECT count(*) FROM clerk.webhook_events WHERE svix_id LIKE 'reconcile:%'").await,
        0
    );
    assert_eq!(
        scalar::<i64>(&pool, "SELECT count(*) FROM clerk.users WHERE deleted_at IS NULL").await,
        554,
        "report mode changes nothing"
    );

    // The real gateway and worker, delivering live webhooks while --fix runs.
    let sources = Sources::default()
        .with_env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
        .with_env("AMQP_URL", amqp_url())
        .with_env("DATABASE_URL", &db.url)
        .with_env("CLERK_SYNC__AMQP__PREFIX", &env.prefix)
        .with_env("CLERK_SYNC__GATEWAY__LISTEN", "127.0.0.1:0")
        .with_env("CLERK_SYNC__GATEWAY__ADMIN_LISTEN", "127.0.0.1:0")
        .with_env("CLERK_SYNC__WORKER__ADMIN_LISTEN", "127.0.0.1:0");
    let settings = Settings::load(&sources, &[]).unwrap();
    let gateway = clerk_sync_gateway::Application::build(&settings).await.unwrap();
    let url = format!("http://127.0.0.1:{}/webhooks/clerk", gateway.port());
    let stop_gateway = gateway.shutdown_token();
    let gateway = tokio::spawn(gateway.run_until_stopped());
    let worker = clerk_sync_worker::Application::build(&settings).await.unwrap();
    let stop_worker = worker.shutdown_token();
    let worker = tokio::spawn(worker.run_until_stopped());

    *fake.served.lock().unwrap() = 0;
    let fix = {
        let cmd = env.command(&["reconcile", "--fix", "--rate", "200", "--show", "3"]);
        tokio::task::spawn_blocking(move || {
            let mut cmd = cmd;
            cmd.stdin(std::process::Stdio::null()).output().unwrap()
        })
    };
    let live = [
        // Newer than Clerk's listed version of a stale user: the webhook wins whatever the order.
        (
            "msg_live_newer",
            samples::envelope(
                "user.updated",
                samples::user("user_0003", "Webhook", "w@example.com", T + 5_000),
                T + 5_000,
            ),
        ),
        // A missing user created meanwhile, newer than the listing.
        (
            "msg_live_created",
            samples::envelope(
                "user.created",
                samples::user("user_0555", "Webhook", "c@example.com", T + 5_000),
                T + 5_000,
            ),
        ),
        // A stale user deleted meanwhile: it stays deleted even if the reconcile writes Clerk's older copy.
        (
            "msg_live_deleted",
            samples::envelope("user.deleted", json!({"id": "user_0007", "object": "user", "deleted": true}), T + 5_000),
        ),
    ];
    let secret = secrecy::SecretString::from(SECRET);
    let http = reqwest::Client::new();
    for (id, body) in &live {
        let body = body.to_string();
        // Svix retries until a 2xx; the gateway answers 503 until its broker connection is up.
        wait_until(Duration::from_secs(15), "the gateway accepts the webhook", || async {
            let ts = chrono::Utc::now().timestamp();
            clerk_sync_testkit::signed_post(&http, &url, &secret, id, ts, body.as_bytes())
                .header("content-type", "application/json")
                .send()
                .await
                .is_ok_and(|a| a.status().is_success())
        })
        .await;
    }
    assert!(!fix.is_finished(), "the webhooks were applied while --fix ran (its 429s alone take 3 s)");
    let fixed = fix.await.unwrap();
    assert!(fixed.status.success(), "--fix leaves nothing: {}", stderr(&fixed));
    println!("$ clerk-sync reconcile --fix\n{}{}", stdout(&fixed), stderr(&fixed));
    assert!(stdout(&fixed).contains("nothing left"), "{}", stdout(&fixed));
    wait_until(Duration::from_secs(20), "the live webhooks are applied", || async {
        scalar::<i64>(
            &pool,
            "SELECT count(*) FROM clerk.webhook_events WHERE svix_id LIKE 'msg_live_%' AND outcome IS NOT NULL",
        )
        .await
            == 3
    })
    .await;

    let row = |id: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (Option<String>, bool)>(
                "SELECT first_name, deleted_at IS NOT NULL FROM clerk.users WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(row("user_0001").await, (Some("Clerk".to_owned()), false), "stale: Clerk's version written");
    assert_eq!(row("user_0599").await, (Some("Clerk".to_owned()), false), "missing: written");
    assert_eq!(row("user_0003").await, (Some("Webhook".to_owned()), false), "the newer webhook wins");
    assert_eq!(row("user_0555").await, (Some("Webhook".to_owned()), false), "the newer webhook wins");
    assert_eq!(row("user_0007").await, (None, true), "a deletion stays final");
    assert_eq!(row("user_gone_2").await, (None, true), "gone: tombstoned, personal data removed");
    let tombstone: (Option<String>, Option<String>, bool) = sqlx::query_as(
        "SELECT primary_email_address, raw::text, deleted_at > now() - interval '5 minutes' FROM clerk.users WHERE id = 'user_gone_2'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tombstone, (None, None, true), "dated at the reconcile, no personal data");
    let deleted_by = |id: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT deleted_by FROM clerk.users WHERE id = $1 UNION ALL
                 SELECT deleted_by FROM clerk.organizations WHERE id = $1 UNION ALL
                 SELECT deleted_by FROM clerk.organization_memberships WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    for id in ["user_gone_2", "org_gone", "orgmem_gone", "orgmem_orphan"] {
        assert_eq!(
            deleted_by(id).await.as_deref(),
            Some("reconcile"),
            "{id}: the tombstone says the reconcile made it"
        );
    }
    assert_eq!(deleted_by("user_0007").await, None, "a webhook's deletion is not the reconcile's");
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT svix_id FROM clerk.webhook_events WHERE svix_id LIKE 'reconcile:%:gone' OR svix_id LIKE 'reconcile:%:orphaned' ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    let recorded: HashSet<String> = recorded.into_iter().collect();
    for id in [
        "reconcile:users:user_gone_0:gone",
        "reconcile:organizations:org_gone:gone",
        "reconcile:memberships:orgmem_gone:gone",
        "reconcile:memberships:orgmem_orphan:orphaned",
    ] {
        assert!(recorded.contains(id), "{id} recorded: {recorded:?}");
    }
    let orphan: bool =
        scalar(&pool, "SELECT deleted_at IS NOT NULL FROM clerk.organization_memberships WHERE id = 'orgmem_orphan'")
            .await;
    assert!(orphan, "the orphaned membership is tombstoned");
    let org: (Option<String>, bool) =
        sqlx::query_as("SELECT name, deleted_at IS NOT NULL FROM clerk.organizations WHERE id = 'org_gone'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(org, (None, true));

    let table = env.run(&args[1..]).await;
    assert!(table.status.success());
    println!("$ clerk-sync reconcile\n{}{}", stdout(&table), stderr(&table));
    let again = env.run(&args).await;
    assert!(again.status.success(), "in sync exits 0: {}", stderr(&again));
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        counts(&again),
        json!({
            "users": {"missing": 0, "stale": 0, "gone": 0},
            "organizations": {"missing": 0, "stale": 0, "gone": 0},
            "memberships": {"missing": 0, "stale": 0, "gone": 0, "orphaned": 0},
        })
    );

    stop_gateway.cancel();
    stop_worker.cancel();
    gateway.await.unwrap().unwrap();
    worker.await.unwrap().unwrap();
    clerk_server.stop(true).await;
    env.cleanup().await;
    pool.close().await;
    db.drop_now().await;
}
