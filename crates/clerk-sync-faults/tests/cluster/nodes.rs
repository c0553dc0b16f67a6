//! Driving the cluster's nodes through `scripts/cluster.sh` (stop, start, kill, freeze, thaw, who
//! leads a queue) without blocking the load that runs beside it, and asking a process's `/readyz`
//! which node it is on.

use std::path::PathBuf;
use std::time::Duration;

/// The three nodes, as every process of a scenario gets them.
pub const NODES: &str =
    "amqp://guest:guest@127.0.0.1:5681/%2f,amqp://guest:guest@127.0.0.1:5682/%2f,amqp://guest:guest@127.0.0.1:5683/%2f";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster.sh")
}

/// Runs `scripts/cluster.sh ARGS` on a blocking thread (the load keeps going) and returns its
/// standard output; panics if it fails.
pub async fn cluster(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(script()).args(&args).output().expect("run scripts/cluster.sh");
        assert!(out.status.success(), "cluster.sh {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
    .await
    .unwrap()
}

/// Brings every node up (idempotent: a scenario that failed half-way may have left one down).
pub async fn all_nodes_up() {
    cluster(&["up"]).await;
}

/// The node number (1-3) leading quorum queue `queue`.
pub async fn leader(queue: &str) -> u8 {
    cluster(&["leader", queue]).await.parse().expect("a node number")
}

/// Node number of a `127.0.0.1:568N` address.
pub fn node_of(address: &str) -> u8 {
    let port: u16 = address.rsplit(':').next().and_then(|p| p.parse().ok()).expect("host:port");
    u8::try_from(port - 5680).expect("a cluster port")
}

/// The node the process with admin listener `admin` (`http://127.0.0.1:N`) is connected to.
pub async fn node_of_process(admin: &str) -> u8 {
    let url = format!("{admin}/readyz");
    clerk_sync_testkit::wait_until_value(Duration::from_secs(20), "readyz names a node", || {
        let url = url.clone();
        async move {
            let text = reqwest::get(url).await.ok()?.text().await.ok()?;
            let body: serde_json::Value = serde_json::from_str(&text).ok()?;
            body["amqp_node"].as_str().map(node_of)
        }
    })
    .await
}
