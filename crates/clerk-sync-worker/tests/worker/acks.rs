//! Acknowledgements against a real channel: what the cumulative ack covers when a delivery in
//! the run was nacked back to the queue.

use std::time::Duration;

use clerk_sync_testkit::amqp_url;
use clerk_sync_worker::acks::AckWindow;
use lapin::options::{BasicGetOptions, BasicNackOptions};
use lapin::{Connection, ConnectionProperties};

use crate::helpers::*;

#[tokio::test]
async fn a_nacked_delivery_ending_a_run_does_not_cancel_the_ack_of_the_committed_ones_before_it() {
    let env = setup("acks-nack").await;
    for _ in 0..3 {
        env.publish(&svix_id(), br#"{"type":"session.created","data":{"id":"sess_1"}}"#).await;
    }
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let msg = channel.basic_get(env.topology.queue().into(), BasicGetOptions { no_ack: false }).await.unwrap();
        got.push(msg.expect("three messages are ready").delivery);
    }
    // The first two were committed; the third could not be settled and went back to the queue.
    got[2].nack(BasicNackOptions { multiple: false, requeue: true }).await.unwrap();
    let window = AckWindow::new();
    window.settled([&got[0], &got[1]], [&got[2]]).await;
    let _ = channel.close(200, "done".into()).await;
    let _ = connection.close(200, "done".into()).await;

    let left = env.dead_letters(Duration::ZERO).await.len()
        + env.probe.drain(&env.topology.queue(), Duration::ZERO).await.len();
    assert_eq!(left, 1, "only the nacked message is back in the queue; the committed two were acked");
    env.cleanup().await;
}
