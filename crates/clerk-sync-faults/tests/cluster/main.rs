//! The cluster suite: the real gateway and two workers against the three-node RabbitMQ 4.0 cluster
//! of `scripts/cluster.sh` (r1-r3@localhost on 5681-5683), one node fault per scenario. Each one
//! proves every 2xx'd event applied exactly once, the dead-letter queue holding exactly the poison
//! sent with the load, and nothing dead-lettered because of the fault, and prints one
//! `CLUSTER | ...` row: scenario, events in flight, longest run of 503s, lost, dead-lettered by
//! the fault.
//!
//! The scenarios stop, kill and freeze broker nodes, so they are `#[ignore]`d and run one at a time
//! by `make test-cluster` (which brings the cluster up first and sets `AMQP_URL` to node 1 for the
//! test's own probes).
//!
//! Scenarios: `scenarios` (1-4: node stopped, leader SIGKILLed, node frozen, rolling restart) and
//! `consumer_timeout` (5: a database outage longer than the broker's consumer_timeout). A new
//! scenario is a module here using `load` (the client, the verdict, the row) and `nodes`.

mod consumer_timeout;
#[allow(dead_code)]
#[path = "../faults/helpers.rs"]
mod helpers;
mod load;
mod nodes;
mod scenarios;
