//! Latency summaries: exact percentiles over every recorded op (runs are small enough
//! that sorting beats a sketch's error bars).

use std::time::Duration;

/// Percentiles of one run's op latencies, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Ops measured.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The slowest op.
    pub max_us: f64,
}

impl Summary {
    /// Summarises `latencies` (in any order; sorted in place).
    pub fn of(latencies: &mut [Duration]) -> Self {
        if latencies.is_empty() {
            return Summary::default();
        }
        latencies.sort_unstable();
        let n = latencies.len();
        // Nearest rank, in integers (q = per_mille / 1000) so 0.999 × 1000 is exactly 999.
        let at = |per_mille: usize| {
            let rank = (n * per_mille).div_ceil(1000);
            micros(latencies[rank.clamp(1, n) - 1])
        };
        Summary {
            count: latencies.len() as u64,
            p50_us: at(500),
            p99_us: at(990),
            p999_us: at(999),
            max_us: micros(latencies[n - 1]),
        }
    }
}

/// Ops per second for `ops` done in `wall`.
pub fn ops_per_sec(ops: u64, wall: Duration) -> f64 {
    if wall.is_zero() {
        return 0.0;
    }
    ops as f64 / wall.as_secs_f64()
}

fn micros(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut l: Vec<Duration> = (1..=1000).rev().map(Duration::from_micros).collect();
        let s = Summary::of(&mut l);
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_us, 500.0);
        assert_eq!(s.p99_us, 990.0);
        assert_eq!(s.p999_us, 999.0);
        assert_eq!(s.max_us, 1000.0);
        assert_eq!(Summary::of(&mut []), Summary::default());
    }

    #[test]
    fn throughput() {
        assert_eq!(ops_per_sec(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(ops_per_sec(5, Duration::ZERO), 0.0);
    }
}
