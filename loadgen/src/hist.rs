//! Latency histograms (microseconds, 3 significant digits) that travel
//! between processes: a worker serialises each one (HdrHistogram V2
//! format, base64) into its final JSON line and the parent adds them up,
//! so percentiles over all workers are exact, not averages of percentiles.

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest recordable latency: one hour, in microseconds. Larger values
/// are recorded as this.
pub const HIGHEST_US: u64 = 3_600_000_000;
/// Significant decimal digits kept.
pub const SIGFIG: u8 = 3;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub struct Hist(Histogram<u64>);

/// Percentiles of one histogram, microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl Hist {
    /// An empty histogram covering 1 µs to [`HIGHEST_US`].
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        // Constant bounds that hdrhistogram accepts (low >= 1, high >= 2 *
        // low, sigfig <= 5): creation cannot fail.
        Self(Histogram::new_with_bounds(1, HIGHEST_US, SIGFIG).expect("valid constant bounds"))
    }

    /// Records one latency (clamped to 1..=[`HIGHEST_US`]).
    pub fn record(&mut self, us: u64) {
        // Clamped into the histogram's range: cannot fail.
        let _ = self.0.record(us.clamp(1, HIGHEST_US));
    }

    /// Records one latency with coordinated-omission correction: when
    /// `us` exceeds `interval_us` (the expected time between two sends),
    /// the samples the sends that could not happen meanwhile would have
    /// seen are added too (`us - interval`, `us - 2 * interval`, ...).
    pub fn record_correct(&mut self, us: u64, interval_us: u64) {
        let _ = self.0.record_correct(us.clamp(1, HIGHEST_US), interval_us);
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds every sample of `other`.
    pub fn add(&mut self, other: &Hist) {
        // Same bounds on both sides; a resize-free add cannot fail then.
        if self.0.add(&other.0).is_err() {
            for v in other.0.iter_recorded() {
                let _ = self.0.record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    /// Percentiles (all 0 when empty).
    pub fn summary(&self) -> LatencySummary {
        if self.0.is_empty() {
            return LatencySummary::default();
        }
        let h = &self.0;
        LatencySummary {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    /// HdrHistogram V2 encoding, base64.
    pub fn to_base64(&self) -> String {
        let mut bytes = Vec::new();
        // Serializing into a Vec only fails for histograms too large for
        // the format, which ours are not.
        let _ = V2Serializer::new().serialize(&self.0, &mut bytes);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// Parses [`Self::to_base64`] output.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| e.to_string())?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| format!("{e:?}"))?;
        let mut out = Self::new();
        out.add(&Self(h));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = Hist::new();
        for v in 1..=1_000 {
            h.record(v);
        }
        let s = h.summary();
        assert_eq!(s.count, 1_000);
        assert_eq!(s.min, 1);
        assert_eq!(s.max, 1_000);
        assert_eq!(s.p50, 500);
        assert_eq!(s.p99, 990);
        assert!((s.mean - 500.5).abs() < 1.0);
        assert_eq!(Hist::new().summary(), LatencySummary::default());
    }

    #[test]
    fn aggregation_across_workers_equals_one_histogram() {
        // Two "workers" with different distributions, serialised and added
        // in the parent, must equal recording everything in one place.
        let mut w1 = Hist::new();
        let mut w2 = Hist::new();
        let mut all = Hist::new();
        for v in 0..5_000u64 {
            let a = 100 + v % 700;
            let b = 10_000 + (v * 37) % 90_000;
            w1.record(a);
            w2.record(b);
            all.record(a);
            all.record(b);
        }
        let mut merged = Hist::new();
        for w in [&w1, &w2] {
            merged.add(&Hist::from_base64(&w.to_base64()).unwrap());
        }
        assert_eq!(merged.summary(), all.summary());
        assert_eq!(merged.len(), 10_000);
        // The slow worker dominates the tail, the fast one the median.
        let s = merged.summary();
        assert!(s.p99 >= 10_000 && s.p50 < 100_000);
        assert!(Hist::from_base64("not base64!").is_err());
    }

    #[test]
    fn coordinated_omission_correction_back_fills() {
        let mut h = Hist::new();
        h.record_correct(1_000, 100);
        // 1000, 900, ..., 100: ten samples.
        assert_eq!(h.len(), 10);
        assert_eq!(h.summary().min, 100);
        let mut h = Hist::new();
        h.record_correct(50, 100);
        assert_eq!(h.len(), 1, "no correction below the interval");
    }

    #[test]
    fn out_of_range_values_are_clamped() {
        let mut h = Hist::new();
        h.record(0);
        h.record(u64::MAX);
        assert_eq!(h.len(), 2);
        assert_eq!(h.summary().min, 1);
        assert!(h.summary().max >= HIGHEST_US);
    }
}
