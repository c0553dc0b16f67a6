//! `--gateway-channels 1,2,4,8`: how `amqp.publisher_channels` is tuned against the ceiling. One
//! gateway per channel count, all running at once; each round measures the broker ceiling (over the
//! count its search found best at the target's concurrency) and then every gateway, in an order that
//! rotates from round to round, so that every variant sees the same broker state and the same noise
//! from the rest of the machine. Off by default: `make bench` measures the configured gateway only.

use serde_json::json;

use super::Bench;
use super::gateway::{TARGET_CONCURRENCY, charging_cpu, gateway_load, median, spawn_gateway_with};
use crate::report::Row;
use crate::{broker, cpu};

/// The gateway at the target's concurrency with each of `counts` publisher channels, against the
/// broker ceiling over `ceiling_channels`.
pub async fn gateway_channels(b: &mut Bench, counts: &[usize], ceiling_channels: usize) -> anyhow::Result<()> {
    let (corpus, point, c) = (b.corpus(), b.opts.point(), TARGET_CONCURRENCY);
    let mut variants = Vec::with_capacity(counts.len());
    for &n in counts {
        let (gw, url) = spawn_gateway_with(b, &[("CLERK_SYNC__AMQP__PUBLISHER_CHANNELS", &n.to_string())]).await?;
        let watch = cpu::Watch::new("load generator", &[("gateway", gw.pid())]);
        variants.push((n, gw, url, watch, Vec::new()));
    }
    let ceiling_watch = cpu::Watch::new("publisher", &[]);
    let mut ceilings = Vec::new();
    for round in 0..b.opts.rounds {
        b.purge().await?;
        let run = broker::ceiling(&b.env, &b.amqp, corpus.clone(), (c, None), ceiling_channels, point);
        let (r, used) = charging_cpu(&ceiling_watch, run, |r| r.accepted_total).await?;
        eprintln!("broker   {} over {ceiling_channels} channels; CPU per message: {}", r.line(), used.line());
        ceilings.push((r, used));
        let len = variants.len();
        for i in 0..len {
            let (n, _, url, watch, runs) = &mut variants[(round + i) % len];
            b.purge().await?;
            let load = gateway_load(b, url, corpus.clone(), c, None, point);
            let (r, used) = charging_cpu(watch, load, |r| r.accepted_total).await?;
            eprintln!("         publisher_channels {n}; CPU per request: {}", used.line());
            runs.push((r, used));
        }
    }
    let ceiling = median(&ceilings).map(|(r, _)| r.throughput);
    for (n, gw, _, _, runs) in variants {
        if let Some((r, used)) = median(&runs) {
            let ratios: Vec<String> = runs
                .iter()
                .zip(&ceilings)
                .map(|((g, _), (br, _))| format!("{:.2}", g.throughput / br.throughput))
                .collect();
            let errors = runs.iter().map(|(g, _)| g.errors).sum();
            let note = format!(
                "median of {} rounds, ratio per round {}; ceiling over {ceiling_channels} channels; CPU per request {}",
                runs.len(),
                ratios.join(", "),
                used.line()
            );
            let figure = format!("gateway closed c{c} throughput, publisher_channels {n}");
            b.rows.push(Row::new(figure, r.throughput, "req/s").ceiling(ceiling).require_no_errors(errors).note(note));
        }
        let runs: Vec<_> = runs.iter().map(|(r, used)| cpu::with_cpu(r, used)).collect();
        b.detail("gateway_channels", json!({ "publisher_channels": n, "runs": runs }));
        gw.stop(std::time::Duration::from_secs(20)).await;
    }
    let ceilings: Vec<_> = ceilings.iter().map(|(r, used)| cpu::with_cpu(r, used)).collect();
    b.detail("gateway_channels_ceiling", json!({ "channels": ceiling_channels, "runs": ceilings }));
    Ok(())
}
