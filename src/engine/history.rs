//! A run's progress over time, for the admin page's chart: how many files
//! were done and how many bytes moved, sampled about once a second. Kept
//! at a bounded size for a run of any length: when full, every other
//! sample goes and the spacing doubles, so the samples always span the
//! whole run.

use serde::{Deserialize, Serialize};

/// Samples kept at most.
pub const MAX_SAMPLES: usize = 720;

/// Progress at one moment of the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Seconds since the run began.
    pub t: f64,
    /// Files done (completed, failed or skipped) in this run.
    pub files: i64,
    /// Bytes moved in this run.
    pub bytes: i64,
}

#[derive(Debug, Clone)]
pub struct History {
    samples: Vec<Sample>,
    /// Seconds between samples at least; doubles with each thinning.
    spacing: f64,
}

impl Default for History {
    fn default() -> History {
        History {
            samples: Vec::new(),
            spacing: 1.0,
        }
    }
}

impl History {
    /// Records a sample, unless the last one is too recent.
    pub fn record(&mut self, sample: Sample) {
        if let Some(last) = self.samples.last() {
            if sample.t - last.t < self.spacing * 0.9 {
                return;
            }
        }
        if self.samples.len() >= MAX_SAMPLES {
            let mut i = 0;
            self.samples.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.spacing *= 2.0;
        }
        self.samples.push(sample);
    }

    /// The samples, and the latest one even when it came too soon: the
    /// chart ends now.
    pub fn with_now(&self, now: Sample) -> Vec<Sample> {
        let mut out = self.samples.clone();
        if out.last().is_none_or(|l| l.t < now.t) {
            out.push(now);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_run_keeps_a_bounded_history_that_spans_it() {
        let mut h = History::default();
        for s in 0..100_000 {
            h.record(Sample {
                t: s as f64,
                files: s,
                bytes: s * 10,
            });
        }
        assert!(h.samples.len() <= MAX_SAMPLES, "{}", h.samples.len());
        assert!(h.samples.len() >= MAX_SAMPLES / 2);
        assert_eq!(h.samples[0].t, 0.0, "the start stays");
        assert!(h.samples.last().unwrap().t > 99_000.0, "the end is recent");
        let all = h.with_now(Sample {
            t: 100_000.5,
            files: 1,
            bytes: 1,
        });
        assert_eq!(all.last().unwrap().t, 100_000.5);
    }

    #[test]
    fn samples_closer_than_the_spacing_are_skipped() {
        let mut h = History::default();
        for t in [0.0, 0.2, 0.5, 1.0, 1.1, 2.05] {
            h.record(Sample {
                t,
                files: 0,
                bytes: 0,
            });
        }
        let ts: Vec<f64> = h.samples.iter().map(|s| s.t).collect();
        assert_eq!(ts, vec![0.0, 1.0, 2.05]);
    }
}
