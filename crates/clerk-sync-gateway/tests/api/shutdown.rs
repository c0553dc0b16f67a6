//! SIGTERM (here: the shutdown token) under load: in-flight requests finish with their confirms;
//! no request is answered 2xx without its message in the queue.

use std::collections::HashSet;
use std::time::Duration;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_under_load_never_answers_2xx_for_an_unqueued_message() {
    let app = std::sync::Arc::new(spawn_app().await);
    let requests: Vec<_> = (0..300)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let id = new_id();
                let body = user_event("user.updated", &format!("user_{i}"));
                let signature = sign(SECRET, &id, now(), &body);
                let result = app
                    .client
                    .post(app.webhook_url())
                    .header("svix-id", &id)
                    .header("svix-timestamp", now().to_string())
                    .header("svix-signature", signature)
                    .body(body)
                    .send()
                    .await;
                (id, result.map(|r| r.status().as_u16()).ok())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    app.shutdown.cancel();
    let results: Vec<(String, Option<u16>)> =
        futures_util::future::join_all(requests).await.into_iter().map(|r| r.unwrap()).collect();

    let accepted: HashSet<String> =
        results.iter().filter(|(_, s)| s.is_some_and(|s| (200..300).contains(&s))).map(|(id, _)| id.clone()).collect();
    let queued: HashSet<String> = app
        .probe
        .drain(&app.topology.queue(), Duration::from_millis(300))
        .await
        .iter()
        .map(|m| m.delivery.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert!(accepted.is_subset(&queued), "a 2xx without a queued message: {:?}", accepted.difference(&queued).next());
    eprintln!("{} of 300 accepted before shutdown, {} queued", accepted.len(), queued.len());

    let app = std::sync::Arc::try_unwrap(app).ok().expect("requests done");
    let mut app = app;
    let task = app.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the gateway stops within the shutdown timeout")
        .unwrap()
        .expect("a clean stop");
    app.stop().await;
}
