//! Many requests at once: every 2xx is exactly one message, no more, no fewer.

use std::collections::HashSet;
use std::time::Duration;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_valid_requests_give_two_thousand_2xx_and_exactly_two_thousand_messages() {
    let app = std::sync::Arc::new(spawn_app().await);
    let requests = (0..2000).map(|i| {
        let app = app.clone();
        tokio::spawn(async move {
            let (id, response) = app.post_signed(&user_event("user.updated", &format!("user_{i}"))).await;
            (id, response.status().as_u16())
        })
    });
    let results: Vec<(String, u16)> =
        futures_util::future::join_all(requests).await.into_iter().map(|r| r.unwrap()).collect();
    let accepted: HashSet<String> = results.iter().filter(|(_, s)| *s == 202).map(|(id, _)| id.clone()).collect();
    assert_eq!(
        accepted.len(),
        2000,
        "statuses other than 202: {:?}",
        results.iter().filter(|(_, s)| *s != 202).take(5).collect::<Vec<_>>()
    );

    let messages = app.probe.drain(&app.topology.queue(), Duration::from_millis(300)).await;
    let ids: Vec<String> =
        messages.iter().map(|m| m.delivery.properties.message_id().as_ref().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 2000);
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), accepted);
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("requests still hold the app"),
    }
}
