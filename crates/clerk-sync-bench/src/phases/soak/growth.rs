//! The soak's verdict on memory growth, a pure function over `(elapsed seconds, RSS KiB)` samples
//! so that it can be tested without running anything: the first quarter is warm-up; what counts is
//! the difference between the mean RSS of the last quarter and of the second (means, because a
//! single sample moves with every batch and allocator decision), plus a least-squares slope over
//! the steady 75% for the report.

use serde::Serialize;

/// Fewer samples leave a quarter of one sample: no mean worth comparing.
pub const MIN_SAMPLES: usize = 8;
/// Allowed growth between the second and the last quarter's mean RSS: the larger of 4 MiB and 5%.
/// Half the run lies between those quarters' centres: 2 minutes of a 4-minute soak, i.e. 240,000
/// requests at 2,000/s, so 4 MiB catches a leak of ~17 bytes per request, and a leak of a few KB
/// per request would show as hundreds of MiB. 5% leaves a large heap room for fragmentation noise.
const GROWTH_FLOOR_KIB: f64 = 4.0 * 1024.0;
const GROWTH_SHARE: f64 = 0.05;

/// One process's resident memory over the steady part of the run (after the warm-up quarter).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Growth {
    /// The first sample after the warm-up, and the last sample.
    pub after_warmup_kib: u64,
    pub end_kib: u64,
    pub second_quarter_mean_kib: f64,
    pub last_quarter_mean_kib: f64,
    /// Last-quarter mean minus second-quarter mean: what the verdict judges.
    pub growth_kib: f64,
    pub allowed_kib: f64,
    /// Least-squares slope over the steady 75%, extrapolated to an hour (reported, not judged:
    /// over a few minutes it is dominated by noise the quarter means average out).
    pub slope_mib_per_hour: f64,
    pub pass: bool,
}

/// Judges `(elapsed seconds, RSS KiB)` samples in time order; `None` below [`MIN_SAMPLES`]. The
/// first quarter is warm-up (connections, channels, pools and caches filling up) and is ignored.
pub fn growth(points: &[(f64, u64)]) -> Option<Growth> {
    let n = points.len();
    if n < MIN_SAMPLES {
        return None;
    }
    let mean = |part: &[(f64, u64)]| part.iter().map(|p| p.1 as f64).sum::<f64>() / part.len() as f64;
    let steady = &points[n / 4..];
    let second = mean(&points[n / 4..n / 2]);
    let last = mean(&points[3 * n / 4..]);
    let growth_kib = last - second;
    let allowed_kib = GROWTH_FLOOR_KIB.max(second * GROWTH_SHARE);
    Some(Growth {
        after_warmup_kib: steady[0].1,
        end_kib: points[n - 1].1,
        second_quarter_mean_kib: second,
        last_quarter_mean_kib: last,
        growth_kib,
        allowed_kib,
        slope_mib_per_hour: slope(steady) * 3600.0 / 1024.0,
        pass: growth_kib < allowed_kib,
    })
}

/// Least-squares slope of `points` (KiB per second); 0 when all times are equal.
fn slope(points: &[(f64, u64)]) -> f64 {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1 as f64).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 as f64 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
}

/// Mean of the last quarter of `values` (at least one value).
pub(super) fn last_quarter_mean(values: &[f64]) -> f64 {
    let part = &values[(3 * values.len() / 4).min(values.len().saturating_sub(1))..];
    part.iter().sum::<f64>() / part.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0;

    /// 48 samples 5 s apart (a 4-minute soak), RSS in KiB from `rss(index)`.
    fn series(rss: impl Fn(usize) -> f64) -> Vec<(f64, u64)> {
        (0..48).map(|i| (5.0 * (i + 1) as f64, rss(i) as u64)).collect()
    }

    #[test]
    fn a_flat_series_passes() {
        let g = growth(&series(|_| 30.0 * MIB)).unwrap();
        assert!(g.pass, "{g:?}");
        assert_eq!((g.growth_kib, g.slope_mib_per_hour), (0.0, 0.0));
        assert_eq!(g.allowed_kib, 4.0 * MIB, "the 4 MiB floor applies below 80 MiB");
    }

    #[test]
    fn a_steadily_growing_series_fails() {
        // 256 KiB per 5 s sample: 6 MiB between the quarter means, 180 MiB an hour.
        let g = growth(&series(|i| 30.0 * MIB + 256.0 * i as f64)).unwrap();
        assert!(!g.pass, "{g:?}");
        assert!((g.growth_kib - 6.0 * MIB).abs() < 1.0, "{g:?}");
        assert!((g.slope_mib_per_hour - 180.0).abs() < 0.01, "{g:?}");
    }

    #[test]
    fn a_warm_up_spike_then_a_flat_series_passes() {
        // Climbs to 76 MiB within the first quarter, then settles at 40 MiB.
        let g = growth(&series(|i| if i < 12 { (10.0 + 6.0 * i as f64) * MIB } else { 40.0 * MIB })).unwrap();
        assert!(g.pass, "{g:?}");
        assert_eq!((g.after_warmup_kib, g.end_kib), (40 * 1024, 40 * 1024));
    }

    #[test]
    fn a_noisy_flat_series_passes() {
        // ±2 MiB of deterministic pseudo-random noise around 30 MiB.
        let noise = |i: usize| ((i as u64).wrapping_mul(2_654_435_761) % 4096) as f64 / 1024.0 - 2.0;
        let g = growth(&series(|i| (30.0 + noise(i)) * MIB)).unwrap();
        assert!(g.pass, "{g:?}");
        assert!(g.growth_kib.abs() < 1.5 * MIB, "{g:?}");
    }

    #[test]
    fn a_large_process_is_allowed_five_percent() {
        // About 400 MiB: 5% (about 20 MiB) allowed. 16 MiB between the quarter means passes, 24 MiB fails.
        let g = growth(&series(|i| 400.0 * MIB + (2.0 / 3.0) * MIB * i as f64)).unwrap();
        assert!(g.pass && (g.allowed_kib - 0.05 * g.second_quarter_mean_kib).abs() < 1.0, "{g:?}");
        let g = growth(&series(|i| 400.0 * MIB + MIB * i as f64)).unwrap();
        assert!(!g.pass, "{g:?}");
    }

    #[test]
    fn too_few_samples_give_no_verdict() {
        assert!(growth(&series(|_| MIB)[..MIN_SAMPLES - 1]).is_none());
        assert!(growth(&series(|_| MIB)[..MIN_SAMPLES]).is_some());
    }

    #[test]
    fn the_queue_is_judged_on_its_last_quarter() {
        let depths: Vec<f64> = (0..8).map(|i| if i < 6 { 1_000.0 } else { 10.0 }).collect();
        assert_eq!(last_quarter_mean(&depths), 10.0);
        assert_eq!(last_quarter_mean(&[7.0]), 7.0);
    }
}
