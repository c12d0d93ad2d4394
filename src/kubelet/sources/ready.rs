//! Source readiness (`config.SourcesReady`): the kubelet must not delete pods, mirror pods or
//! containers it cannot account for until every configured source has delivered its first
//! snapshot, or it would remove things the API simply has not listed yet. A source's first
//! `SourceUpdate::Snapshot` is its readiness signal.

use std::collections::BTreeSet;

use super::{Source, SourceUpdate};

/// Tracks which configured sources have sent their first snapshot.
#[derive(Clone, Debug, Default)]
pub struct SourcesReady {
    expected: BTreeSet<Source>,
    seen: BTreeSet<Source>,
}

impl SourcesReady {
    /// Readiness over the given configured sources.
    pub fn new(expected: impl IntoIterator<Item = Source>) -> Self {
        Self {
            expected: expected.into_iter().collect(),
            seen: BTreeSet::new(),
        }
    }

    /// Records an update; a snapshot marks its source ready.
    pub fn observe(&mut self, update: &SourceUpdate) {
        if let SourceUpdate::Snapshot { source, .. } = update {
            self.seen.insert(*source);
        }
    }

    /// Whether `source` has sent its first snapshot.
    pub fn is_ready(&self, source: Source) -> bool {
        self.seen.contains(&source)
    }

    /// True once every configured source has sent a snapshot.
    pub fn all_ready(&self) -> bool {
        sources_ready(&self.expected, &self.seen)
    }
}

/// True when every expected source is among those seen (`SeenAllSources`).
pub fn sources_ready(expected: &BTreeSet<Source>, seen: &BTreeSet<Source>) -> bool {
    expected.is_subset(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_after_every_first_snapshot() {
        let mut r = SourcesReady::new([Source::Api, Source::File]);
        assert!(!r.all_ready());
        r.observe(&SourceUpdate::Upsert {
            source: Source::Api,
            pod: Box::default(),
        });
        assert!(!r.is_ready(Source::Api), "an upsert is not a full view");
        r.observe(&SourceUpdate::Snapshot {
            source: Source::Api,
            pods: vec![],
        });
        assert!(r.is_ready(Source::Api));
        assert!(!r.all_ready());
        r.observe(&SourceUpdate::Snapshot {
            source: Source::File,
            pods: vec![],
        });
        assert!(r.all_ready());
        assert!(SourcesReady::new([]).all_ready());
    }
}
