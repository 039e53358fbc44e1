//! Pull progress in status: a pull that has been running for [`REPORT_AFTER`] shows in the spec's
//! status (`status.pull`: layers named and done, bytes downloaded of those known), rewritten at most
//! once per [`REPORT_EVERY`] while it goes on. A short pull writes nothing extra. The next status
//! written after the pull drops it.
//!
//! [`PullTally`] sums the engine's progress lines, one per layer event: "Pulling fs layer",
//! "Downloading" (with current and total bytes), "Download complete", "Extracting", "Pull complete",
//! "Already exists". Pure; the reconcile feeds it and writes what it says.

use std::collections::BTreeMap;
use std::time::Duration;

use kedge_crds::PullStatus;

use crate::docker::PullProgress;

/// How long a pull runs before its progress is written to status.
pub const REPORT_AFTER: Duration = Duration::from_secs(3);
/// How often a long pull's progress is rewritten.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// One layer as far as the engine has told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Layer {
    current: u64,
    total: u64,
    done: bool,
}

/// The sum of one pull's progress lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullTally {
    layers: BTreeMap<String, Layer>,
}

impl PullTally {
    /// Takes in one of the engine's progress lines.
    pub fn record(&mut self, line: &PullProgress) {
        let Some(id) = line.layer.as_deref().filter(|id| !id.is_empty()) else { return };
        // Lines about the image as a whole ("Pulling from library/x", the tag) have the tag as
        // their id and none of a layer's words: not a layer.
        let status = line.status.as_str();
        let words = ["Pulling fs layer", "Waiting", "Downloading", "Verifying", "Download complete"];
        let is_layer_line = words
            .iter()
            .chain(["Extracting", "Pull complete", "Already exists"].iter())
            .any(|word| status.starts_with(word));
        if !is_layer_line {
            return;
        }
        let layer = self.layers.entry(id.to_owned()).or_default();
        let count = |value: Option<i64>| value.and_then(|v| u64::try_from(v).ok());
        match status {
            s if s.starts_with("Downloading") => {
                if let Some(total) = count(line.total) {
                    layer.total = layer.total.max(total);
                }
                if let Some(current) = count(line.current) {
                    layer.current = layer.current.max(current);
                }
            }
            s if s.starts_with("Download complete") || s.starts_with("Extracting") => {
                layer.current = layer.current.max(layer.total);
            }
            s if s.starts_with("Pull complete") || s.starts_with("Already exists") => {
                layer.current = layer.current.max(layer.total);
                layer.done = true;
            }
            _ => {}
        }
    }

    /// Whether the engine has named no layer yet.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The status to show for a pull of `image` begun at `started_at` (RFC 3339).
    pub fn status(&self, image: &str, started_at: &str) -> PullStatus {
        let mut status = PullStatus {
            image: image.to_owned(),
            started_at: started_at.to_owned(),
            ..PullStatus::default()
        };
        for layer in self.layers.values() {
            status.layers = status.layers.saturating_add(1);
            status.layers_done = status.layers_done.saturating_add(u32::from(layer.done));
            status.bytes_done = status.bytes_done.saturating_add(layer.current);
            status.bytes_total = status.bytes_total.saturating_add(layer.total);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(layer: &str, status: &str, current: Option<i64>, total: Option<i64>) -> PullProgress {
        PullProgress { layer: Some(layer.to_owned()), status: status.to_owned(), current, total }
    }

    #[test]
    fn layers_are_summed_as_the_engine_reports_them() {
        let mut tally = PullTally::default();
        for progress in [
            line("v1", "Pulling from kedge-test/app", None, None),
            line("aaa", "Already exists", None, None),
            line("bbb", "Pulling fs layer", None, None),
            line("ccc", "Pulling fs layer", None, None),
            line("bbb", "Downloading", Some(1_000), Some(4_000)),
            line("ccc", "Waiting", None, None),
            line("bbb", "Downloading", Some(3_000), Some(4_000)),
        ] {
            tally.record(&progress);
        }
        let status = tally.status("r/app:v1", "2026-12-07T04:00:00Z");
        assert_eq!((status.layers, status.layers_done), (3, 1), "the tag's line is no layer: {status:?}");
        assert_eq!((status.bytes_done, status.bytes_total), (3_000, 4_000));

        for progress in [
            line("bbb", "Download complete", None, None),
            line("bbb", "Extracting", Some(10), Some(4_000)),
            line("bbb", "Pull complete", None, None),
            line("ccc", "Downloading", Some(500), Some(2_000)),
        ] {
            tally.record(&progress);
        }
        let status = tally.status("r/app:v1", "2026-12-07T04:00:00Z");
        assert_eq!((status.layers, status.layers_done), (3, 2));
        assert_eq!(
            (status.bytes_done, status.bytes_total),
            (4_500, 6_000),
            "extracting does not reset the download"
        );
    }

    #[test]
    fn nonsense_from_the_engine_never_panics_or_goes_backwards() {
        let mut tally = PullTally::default();
        tally.record(&line("x", "Downloading", Some(5_000), Some(10_000)));
        tally.record(&line("x", "Downloading", Some(-1), Some(i64::MIN)));
        tally.record(&line("x", "Downloading", Some(100), Some(10_000)));
        tally.record(&PullProgress {
            layer: None,
            status: "Digest: sha256:...".into(),
            current: None,
            total: None,
        });
        tally.record(&line("", "Downloading", Some(1), Some(1)));
        tally.record(&line("y", "Downloading", Some(i64::MAX), Some(i64::MAX)));
        tally.record(&line("z", "Downloading", Some(i64::MAX), Some(i64::MAX)));
        let status = tally.status("i", "t");
        assert_eq!(status.layers, 3);
        assert_eq!(status.bytes_done, u64::MAX, "saturates instead of overflowing");
        assert_eq!(tally.layers["x"].current, 5_000);
    }
}
