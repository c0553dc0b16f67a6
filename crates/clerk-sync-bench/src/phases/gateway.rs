//! Broker ceiling and gateway, interleaved: at each concurrency the ceiling first searches the
//! channel count the broker does best with (1, 2, 4, 8, 16 by default: the gateway's own setting is
//! not the broker's best, and a ceiling measured at it flattered the ratio), then the plain-lapin
//! ceiling at that count is measured right before the gateway, so both see the same broker state and
//! the same background noise; at the target's concurrency the pair is repeated and the medians are
//! reported, since the shared broker stalls now and then for tens of milliseconds and one such stall
//! would otherwise decide the ratio.
//! Then the HTTP floor (requests the gateway refuses, nothing published), which bounds the ratio the
//! gateway can reach on these cores, and at each fixed rate the broker alone then the gateway
//! open-loop. The queue is purged before every point so a growing backlog never slows the broker
//! down between points.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;

use super::{Bench, targets};
use crate::broker::ChannelSearch;
use crate::corpus::Corpus;
use crate::http1::Target as Url;
use crate::loadgen::{self, LoadReport, LoadSpec};
use crate::procs::Service;
use crate::report::Row;
use crate::{broker, cpu};

/// Concurrency at which `targets::GATEWAY_VS_BROKER` applies.
pub(super) const TARGET_CONCURRENCY: usize = 64;
/// The open-loop rate at which `targets::GATEWAY_OPEN_P99_MS` applies.
const TARGET_RATE: f64 = 5_000.0;
/// What the gateway answers a request whose signature it cannot verify.
const REFUSED: u16 = 401;

fn latency_note(r: &LoadReport) -> String {
    format!(
        "p50 {:.2} ms, p99.9 {:.2} ms, max {:.1} ms, {} requests, {} errors",
        r.latency.p50_ms, r.latency.p999_ms, r.latency.max_ms, r.requests, r.errors
    )
}

pub async fn spawn_gateway(b: &Bench) -> anyhow::Result<(Service, Url)> {
    spawn_gateway_with(b, &[]).await
}

/// A gateway with some settings overridden (`CLERK_SYNC__...` variables).
pub async fn spawn_gateway_with(b: &Bench, vars: &[(&str, &str)]) -> anyhow::Result<(Service, Url)> {
    let mut gw = Service::gateway(&b.paths, &b.env, vars)?;
    gw.wait_ready(Duration::from_secs(30)).await?;
    let url = format!("http://127.0.0.1:{}/webhooks/clerk", gw.port.unwrap_or_default());
    Ok((gw, Url::parse(&url).await?))
}

/// One gateway load point against `url`, signed with the gateway's secret.
pub async fn gateway_load(
    b: &Bench,
    url: &Url,
    corpus: Arc<Corpus>,
    concurrency: usize,
    rate: Option<f64>,
    window: (Duration, Duration),
) -> anyhow::Result<LoadReport> {
    signed_load(b, url, b.env.secret.clone(), corpus, concurrency, rate, window).await
}

async fn signed_load(
    b: &Bench,
    url: &Url,
    secret: SecretString,
    corpus: Arc<Corpus>,
    concurrency: usize,
    rate: Option<f64>,
    (warmup, duration): (Duration, Duration),
) -> anyhow::Result<LoadReport> {
    let spec = LoadSpec {
        target: url.clone(),
        secret,
        concurrency,
        rate,
        duration,
        warmup,
        corpus,
        id_prefix: format!("{}{}{}", b.env.run_id, concurrency, rate.map_or(0, |r| r as u64)),
    };
    let report = loadgen::run(spec).await?;
    eprintln!("gateway  {}", report.line());
    Ok(report)
}

/// The HTTP floor: the same closed-loop load, signed with a secret the gateway does not hold, so
/// every request is read, verified and refused with 401 and nothing reaches the broker. Its CPU per
/// request is what the HTTP leg alone (client included) costs on this machine; added to the
/// ceiling's CPU per message, it bounds the ratio the gateway can reach at the same CPU use.
async fn http_floor(
    b: &mut Bench,
    url: &Url,
    watch: &cpu::Watch,
    ceiling_machine_us: Option<f64>,
) -> anyhow::Result<()> {
    let (corpus, point) = (b.corpus(), b.opts.point());
    let load = signed_load(b, url, crate::env::new_secret(), corpus, TARGET_CONCURRENCY, None, point);
    let (r, used) = charging_cpu(watch, load, |r| r.answered_total).await?;
    eprintln!("         CPU per refused request: {}", used.line());
    let refused = r.statuses.get(&REFUSED).copied().unwrap_or_default();
    // RabbitMQ's own background work (compaction after the last purge) is not the HTTP leg's.
    let floor_us = used.0.get("machine").map(|m| m - used.0.get("broker").copied().unwrap_or_default());
    let bound = ceiling_machine_us.zip(floor_us).map(|(c, f)| ratio_bound(c, f));
    let bound_note = match (ceiling_machine_us, floor_us, bound) {
        (Some(ceiling), Some(floor), Some(bound)) => format!(
            "; HTTP alone {floor:.0} µs (the machine's less the broker's): with the ceiling's {ceiling:.0} µs per \
             message, the gateway can reach at most {bound:.2}x of the ceiling at the same CPU use"
        ),
        _ => String::new(),
    };
    let row = Row::new(
        format!("HTTP floor c{TARGET_CONCURRENCY} (401, nothing published)"),
        r.requests as f64 / r.window_s,
        "req/s",
    )
    .require_no_errors(r.requests.saturating_sub(refused))
    .note(format!("every request verified and refused; CPU per request {}{bound_note}", used.line()));
    b.rows.push(row);
    let mut detail = cpu::with_cpu(&r, &used);
    detail["ratio_bound"] = json!(bound);
    b.detail("http_floor", detail);
    Ok(())
}

/// The best gateway-to-ceiling throughput ratio when both runs use the same CPU: every confirmed
/// request costs at least the ceiling's CPU per message plus the HTTP floor's CPU per request.
fn ratio_bound(ceiling_us: f64, floor_us: f64) -> f64 {
    ceiling_us / (ceiling_us + floor_us)
}

/// The run of median throughput (the lower middle one for an even count).
pub(super) fn median(runs: &[(LoadReport, cpu::PerMessage)]) -> Option<&(LoadReport, cpu::PerMessage)> {
    let mut sorted: Vec<_> = runs.iter().collect();
    sorted.sort_by(|a, b| a.0.throughput.total_cmp(&b.0.throughput));
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

/// Runs of each channel count in the search, interleaved: the best run counts, so that one broker
/// stall in a short run does not rule a count out.
const SEARCH_PASSES: usize = 2;

/// Each search run's window: long enough to rank the counts (tens of thousands of confirms each),
/// short enough that two runs of five counts at three concurrencies add about a minute.
fn search_window((warmup, secs): (Duration, Duration)) -> (Duration, Duration) {
    (warmup / 2, secs.min(Duration::from_secs(2)))
}

/// The channel count of the ceiling at `concurrency`: the only one given, or the best of a search.
async fn ceiling_channels(
    b: &mut Bench,
    corpus: Arc<Corpus>,
    concurrency: usize,
) -> anyhow::Result<(usize, Option<ChannelSearch>)> {
    let counts = b.opts.ceiling_channels.clone();
    if let [only] = counts[..] {
        return Ok((only, None));
    }
    let window = search_window(b.opts.point());
    let load = (concurrency, &counts[..], SEARCH_PASSES);
    let search = broker::search_channels(&b.env, &b.amqp, &b.channel, corpus, load, window).await?;
    eprintln!("broker   c{concurrency}: ceiling over {}", search.line());
    b.detail("broker_channel_search", json!(search));
    Ok((search.best, Some(search)))
}

/// `4 of 1/2/4/8/16 channels (1: ..., ...)` after a search, else `8 channels`.
fn channels_note(channels: usize, search: Option<&ChannelSearch>) -> String {
    search.map_or_else(|| format!("{channels} channels"), ChannelSearch::line)
}

/// Runs one load point and charges the CPU `watch` saw meanwhile to every message `counted` (warm-up
/// included, since the CPU of the warm-up is counted too).
pub(super) async fn charging_cpu(
    watch: &cpu::Watch,
    point: impl Future<Output = anyhow::Result<LoadReport>>,
    counted: fn(&LoadReport) -> u64,
) -> anyhow::Result<(LoadReport, cpu::PerMessage)> {
    let before = watch.snapshot();
    let report = point.await?;
    let used = cpu::PerMessage::between(&before, &watch.snapshot(), counted(&report));
    Ok((report, used))
}

/// `with_broker`: measure the ceiling; `with_gateway`: measure the gateway (both for `all`).
pub async fn broker_and_gateway(b: &mut Bench, with_broker: bool, with_gateway: bool) -> anyhow::Result<()> {
    let mut gateway = if with_gateway { Some(spawn_gateway(b).await?) } else { None };
    let gateway_channels = b.env.defaults.amqp.publisher_channels;
    // The open-loop broker runs use the closed-loop best at their connection count, if searched.
    let mut open_loop_channels = match b.opts.ceiling_channels[..] {
        [only] => only,
        _ => gateway_channels,
    };
    let corpus = b.corpus();
    let point = b.opts.point();
    // The processes do not change during the phase: find them once.
    let ceiling_watch = cpu::Watch::new("publisher", &[]);
    let gateway_watch = gateway.as_ref().map(|(gw, _)| cpu::Watch::new("load generator", &[("gateway", gw.pid())]));
    let (mut ceiling_machine_us, mut target_ceiling_channels) = (None, None);
    for c in b.opts.concurrency.clone() {
        let rounds = if c == TARGET_CONCURRENCY && with_broker && with_gateway { b.opts.rounds } else { 1 };
        let (channels, search) =
            if with_broker { ceiling_channels(b, corpus.clone(), c).await? } else { (gateway_channels, None) };
        if c == b.opts.open_connections && search.is_some() {
            open_loop_channels = channels;
        }
        if c == TARGET_CONCURRENCY && with_broker {
            target_ceiling_channels = Some(channels);
        }
        let (mut brokers, mut gateways) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            if with_broker {
                b.purge().await?;
                let run = broker::ceiling(&b.env, &b.amqp, corpus.clone(), (c, None), channels, point);
                let (r, used) = charging_cpu(&ceiling_watch, run, |r| r.accepted_total).await?;
                eprintln!("broker   {} over {channels} channels; CPU per message: {}", r.line(), used.line());
                let mut detail = cpu::with_cpu(&r, &used);
                detail["channels"] = json!(channels);
                b.detail("broker", detail);
                brokers.push((r, used));
            }
            if let (Some((gw, url)), Some(watch)) = (gateway.as_mut(), &gateway_watch) {
                b.purge().await?;
                let load = gateway_load(b, url, corpus.clone(), c, None, point);
                let (r, used) = charging_cpu(watch, load, |r| r.accepted_total).await?;
                eprintln!("         CPU per request: {}", used.line());
                gw.sample_rss();
                let mut detail = cpu::with_cpu(&r, &used);
                detail["publisher_channels"] = json!(gateway_channels);
                b.detail("gateway_closed", detail);
                gateways.push((r, used));
            }
        }
        let ceiling_run = median(&brokers);
        if let Some((r, used)) = ceiling_run {
            b.broker_ceiling.insert(c, (r.throughput, r.latency.p99_ms));
            if c == TARGET_CONCURRENCY {
                ceiling_machine_us = used.0.get("machine").copied();
            }
            if !with_gateway {
                let over = channels_note(channels, search.as_ref());
                let note = format!("over {over}; {}; CPU per message {}", latency_note(r), used.line());
                b.rows.push(Row::new(format!("broker ceiling c{c} throughput"), r.throughput, "msg/s").note(note));
            }
        }
        if let Some((r, used)) = median(&gateways) {
            let errors = gateways.iter().map(|(g, _)| g.errors).sum();
            let ceiling = b.broker_ceiling.get(&c).copied();
            let mut row = Row::new(format!("gateway closed c{c} throughput"), r.throughput, "req/s")
                .ceiling(ceiling.map(|x| x.0));
            if c == TARGET_CONCURRENCY {
                row = row.goal(&targets::GATEWAY_VS_BROKER).require_no_errors(errors);
            }
            let rounds_note = if rounds > 1 {
                let ratios: Vec<String> = brokers
                    .iter()
                    .zip(&gateways)
                    .map(|((br, _), (gw, _))| format!("{:.2}", gw.throughput / br.throughput))
                    .collect();
                format!("median of {rounds} broker/gateway pairs, ratio per pair {}; ", ratios.join(", "))
            } else {
                String::new()
            };
            let cpu_note = match ceiling_run {
                Some((_, ceiling)) => {
                    format!("; CPU per request {}; per message in the ceiling {}", used.line(), ceiling.line())
                }
                None => format!("; CPU per request {}", used.line()),
            };
            let over_note = match ceiling_run {
                Some(_) => format!(
                    "gateway over {gateway_channels} channels, ceiling over {}; ",
                    channels_note(channels, search.as_ref())
                ),
                None => format!("gateway over {gateway_channels} channels; "),
            };
            b.rows.push(row.note(format!(
                "{over_note}{rounds_note}{} (mean body {:.0} B){cpu_note}",
                latency_note(r),
                corpus.mean_len()
            )));
            b.rows.push(
                Row::new(format!("gateway closed c{c} p99 (CO-corrected)"), r.latency.p99_ms, "ms")
                    .ceiling(ceiling.map(|x| x.1))
                    .note(format!("uncorrected p99 {:.2} ms; ceiling = broker p99", r.latency.raw_p99_ms)),
            );
        }
    }
    if let (Some((_, url)), Some(watch)) = (&gateway, &gateway_watch)
        && b.opts.concurrency.contains(&TARGET_CONCURRENCY)
    {
        b.purge().await?;
        http_floor(b, url, watch, ceiling_machine_us).await?;
    }
    if let Some(channels) = target_ceiling_channels.filter(|_| with_gateway && !b.opts.gateway_channels.is_empty()) {
        let counts = b.opts.gateway_channels.clone();
        super::tuning::gateway_channels(b, &counts, channels).await?;
    }
    if let Some((mut gw, url)) = gateway {
        let connections = b.opts.open_connections;
        for rate in b.opts.rates.clone() {
            // The broker alone at the same rate: how much of the gateway's p99 is RabbitMQ's.
            let broker_p99 = if with_broker {
                b.purge().await?;
                let load = (connections, Some(rate));
                let r = broker::ceiling(&b.env, &b.amqp, corpus.clone(), load, open_loop_channels, point).await?;
                eprintln!("broker   {} over {open_loop_channels} channels", r.line());
                let mut detail = json!(r);
                detail["channels"] = json!(open_loop_channels);
                b.detail("broker_open", detail);
                Some(r.latency.p99_ms)
            } else {
                None
            };
            b.purge().await?;
            let r = gateway_load(b, &url, corpus.clone(), connections, Some(rate), point).await?;
            gw.sample_rss();
            let mut row = Row::new(format!("gateway open {rate:.0}/s p99"), r.latency.p99_ms, "ms").ceiling(broker_p99);
            if (rate - TARGET_RATE).abs() < f64::EPSILON {
                row = row.goal(&targets::GATEWAY_OPEN_P99_MS);
            }
            let note = format!(
                "achieved {:.0} req/s over {connections} conns; {}; ceiling = broker p99 at the same rate over \
                 {open_loop_channels} channels",
                r.throughput,
                latency_note(&r)
            );
            b.rows.push(row.require_no_errors(r.errors).note(note));
            b.detail("gateway_open", json!(r));
        }
        b.purge().await?;
        let rss = gw.stop(Duration::from_secs(20)).await;
        b.gateway_rss_kib = b.gateway_rss_kib.max(rss);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(throughput: f64) -> (LoadReport, cpu::PerMessage) {
        let report = LoadReport {
            mode: "closed",
            concurrency: 64,
            rate: None,
            requests: 0,
            accepted: 0,
            errors: 0,
            statuses: Default::default(),
            io_errors: 0,
            unsent: 0,
            window_s: 1.0,
            throughput,
            latency: Default::default(),
            worst_ms_per_second: Vec::new(),
            accepted_total: 0,
            answered_total: 0,
        };
        (report, cpu::PerMessage::default())
    }

    #[test]
    fn the_median_round_is_the_middle_throughput_whatever_the_order_and_the_lower_one_of_two() {
        let throughput = |runs: &[(LoadReport, cpu::PerMessage)]| median(runs).map(|(r, _)| r.throughput);
        assert_eq!(throughput(&[run(9.0), run(3.0), run(5.0)]), Some(5.0));
        assert_eq!(throughput(&[run(9.0), run(3.0)]), Some(3.0));
        assert_eq!(throughput(&[run(7.0)]), Some(7.0));
        assert_eq!(throughput(&[]), None);
    }

    #[test]
    fn the_ratio_bound_charges_every_request_the_ceilings_cpu_and_the_http_floors() {
        // 150 µs per message in the ceiling, 50 µs per request for HTTP alone: 150 / 200.
        assert!((ratio_bound(150.0, 50.0) - 0.75).abs() < 1e-12);
        assert!((ratio_bound(90.0, 0.0) - 1.0).abs() < 1e-12);
    }
}
