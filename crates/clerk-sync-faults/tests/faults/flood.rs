//! An unauthenticated flood: 300 connections that each send fresh-looking svix headers (current
//! timestamp, a well-formed signature made with the wrong secret) and trickle a large body, over and
//! over, while valid signed events arrive one at a time. The gateway's memory (`VmRSS` sampled,
//! `VmHWM` at the end, from `/proc/<pid>/status`) must stay at or under 128 MiB, and every valid
//! event must get its 2xx within 2 s. Nothing is restarted, so this scenario can run on its own:
//! `cargo nextest run -p clerk-sync-faults --run-ignored only flood`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clerk_sync_core::settings::{Settings, Sources};
use clerk_sync_testkit::{signed_post, wait_until};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const CONNECTIONS: usize = 300;
const RSS_LIMIT_KIB: u64 = 128 * 1024;
const VALID_WITHIN: Duration = Duration::from_secs(2);
/// A trickle: 8 KiB every 50 ms, so a 1 MB body takes about 6 s (inside the 10 s request timeout).
const PIECE: usize = 8 * 1024;
const PIECE_EVERY: Duration = Duration::from_millis(50);

/// The `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// What the flood's connections were answered, by status (0: closed without an answer).
#[derive(Default)]
struct Tally {
    answers: Mutex<BTreeMap<u16, u64>>,
    bytes_sent: AtomicU64,
}

impl Tally {
    fn answered(&self, status: u16) {
        *self.answers.lock().unwrap().entry(status).or_default() += 1;
    }

    fn summary(&self) -> String {
        let answers = self.answers.lock().unwrap();
        answers.iter().map(|(status, n)| format!("{n}x {status}")).collect::<Vec<_>>().join(", ")
    }
}

#[derive(Clone, Copy)]
enum Shape {
    /// What the issue saw: `Content-Length: 1000000`.
    Megabyte,
    /// As large as the gateway accepts, announced.
    Largest,
    /// As large as the gateway accepts, chunked: no length announced.
    Chunked,
}

/// One forged request trickled on a fresh connection; returns the status it was answered with.
async fn forged_trickle(addr: &str, shape: Shape, max_body: usize, tally: &Tally, stop: &AtomicBool) -> Option<u16> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut rd, mut wr) = stream.into_split();
    let id = format!("msg_flood_{}", uuid::Uuid::new_v4().simple());
    let ts = chrono::Utc::now().timestamp();
    let wrong = SecretString::from("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".to_owned());
    let signature = clerk_sync_core::signing::sign(&wrong, &id, ts, b"forged").unwrap();
    let (total, framing) = match shape {
        Shape::Megabyte => (1_000_000, "Content-Length: 1000000".to_owned()),
        Shape::Largest => (max_body, format!("Content-Length: {max_body}")),
        Shape::Chunked => (max_body, "Transfer-Encoding: chunked".to_owned()),
    };
    let head = format!(
        "POST /webhooks/clerk HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nsvix-id: {id}\r\nsvix-timestamp: {ts}\r\nsvix-signature: {signature}\r\n{framing}\r\n\r\n"
    );
    let write = async {
        wr.write_all(head.as_bytes()).await?;
        let mut sent = 0;
        while sent < total && !stop.load(Ordering::Relaxed) {
            let n = PIECE.min(total - sent);
            let piece = vec![b' '; n];
            match shape {
                Shape::Chunked => {
                    let mut framed = format!("{n:x}\r\n").into_bytes();
                    framed.extend_from_slice(&piece);
                    framed.extend_from_slice(b"\r\n");
                    wr.write_all(&framed).await?;
                }
                _ => wr.write_all(&piece).await?,
            }
            sent += n;
            tally.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
            tokio::time::sleep(PIECE_EVERY).await;
        }
        if matches!(shape, Shape::Chunked) {
            wr.write_all(b"0\r\n\r\n").await?;
        }
        // Then wait for the verdict.
        std::future::pending::<std::io::Result<()>>().await
    };
    let mut answer = [0u8; 12];
    let read = async {
        let mut got = 0;
        while got < answer.len() {
            match rd.read(&mut answer[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        got
    };
    let got = tokio::select! {
        got = read => got,
        _ = write => 0,
    };
    let status = std::str::from_utf8(&answer[..got]).ok()?.split(' ').nth(1)?.parse().ok()?;
    Some(status)
}

async fn flooder(addr: String, shape: Shape, max_body: usize, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let status = forged_trickle(&addr, shape, max_body, &tally, &stop).await;
        if !stop.load(Ordering::Relaxed) {
            tally.answered(status.unwrap_or(0));
        }
        // An attacker comes straight back.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// The flood's 300 writers get their own threads, so the valid client's latency is the gateway's,
// not this runtime's queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a heavy load scenario; run with `make test-faults` or alone (see the module header)"]
async fn a_forged_trickle_flood_neither_exhausts_memory_nor_starves_valid_requests() {
    let mut stack = Stack::new("f-flood").await;
    stack.spawn_worker();
    let gateway = stack.spawn_gateway().await;
    let pid = gateway.child.as_ref().unwrap().id();
    let addr = gateway.url.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    let max_body = Settings::load(&Sources::default(), &[]).unwrap().gateway.max_body_size;
    let (idle_rss, _) = memory_kib(pid);

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let shapes = [Shape::Megabyte, Shape::Largest, Shape::Chunked];
    let flood: Vec<_> = (0..CONNECTIONS)
        .map(|i| tokio::spawn(flooder(addr.clone(), shapes[i % 3], max_body, tally.clone(), stop.clone())))
        .collect();
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (peak_rss, stop) = (peak_rss.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak_rss.fetch_max(memory_kib(pid).0, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // Every connection has sent its head and a few pieces before the valid events start.
    let ramped = (CONNECTIONS * PIECE * 4) as u64;
    wait_until(Duration::from_secs(30), "the flood is under way", || async {
        tally.bytes_sent.load(Ordering::Relaxed) >= ramped
    })
    .await;

    // Valid events one at a time for longer than the request timeout, so held bodies turn over.
    let history = History::new(20, 2);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let secret = SecretString::from(SECRET.to_owned());
    let stats = ClientStats::default();
    let mut latencies = Vec::new();
    let mut late_or_refused = Vec::new();
    for (id, body) in &history.events {
        let started = Instant::now();
        let sent = signed_post(&client, &gateway.url, &secret, id, chrono::Utc::now().timestamp(), body).send().await;
        let took = started.elapsed();
        latencies.push(took);
        match sent {
            Ok(r) if r.status().is_success() => stats.accepted.fetch_add(1, Ordering::Relaxed),
            Ok(r) => {
                late_or_refused.push(format!("{id}: {} after {took:?}", r.status()));
                stats.not_2xx.fetch_add(1, Ordering::Relaxed)
            }
            Err(e) => {
                late_or_refused.push(format!("{id}: {e} after {took:?}"));
                stats.unreachable.fetch_add(1, Ordering::Relaxed)
            }
        };
        if took > VALID_WITHIN {
            late_or_refused.push(format!("{id}: took {took:?}"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    stop.store(true, Ordering::Relaxed);
    latencies.sort();
    let (median, slowest) = (latencies[latencies.len() / 2], latencies[latencies.len() - 1]);
    for task in flood {
        task.abort();
    }
    let _ = sampler.await;
    let (rss, hwm) = memory_kib(pid);
    let peak = peak_rss.load(Ordering::Relaxed).max(hwm);
    let sent_mib = tally.bytes_sent.load(Ordering::Relaxed) / (1024 * 1024);
    println!(
        "FLOOD | {CONNECTIONS} forged trickle connections (1 MB / {max_body} B announced / chunked) | gateway RSS idle {} MiB, peak {} MiB (VmHWM {} MiB), after {} MiB | valid: {} of {} accepted, median {median:?}, slowest {slowest:?} | flood sent {sent_mib} MiB, answered: {}",
        idle_rss / 1024,
        peak / 1024,
        hwm / 1024,
        rss / 1024,
        stats.accepted.load(Ordering::Relaxed),
        history.events.len(),
        tally.summary(),
    );
    assert!(late_or_refused.is_empty(), "valid requests late or refused during the flood: {late_or_refused:?}");
    assert!(peak <= RSS_LIMIT_KIB, "the gateway peaked at {} MiB, over 128 MiB", peak / 1024);

    let verified = stack.verify(&history, Duration::from_secs(60)).await;
    report(
        "300-connection forged-signature trickle flood beside valid events",
        CONNECTIONS,
        &format!("peak RSS {} MiB (limit 128), slowest valid 2xx {slowest:?} (limit 2 s)", peak / 1024),
        &stats,
        &verified,
    );
    drop(gateway);
    stack.cleanup().await;
}
