//! The one place where a store's ordered row streams become whole analyses.
//!
//! A backup reads analyses, chunks and artifacts (and, where findings live in a table of their
//! own, findings) as separate streams that share one order — the backup order of their
//! analysis, then the child's own order. Each analysis's children are then at the heads of
//! their streams: no query per analysis, one analysis in memory.

use super::Result;
use crate::model::{Analysis, Artifact, Chunk, Finding};

/// A store's row streams for one backup, each in backup order of the owning analysis. Every
/// child comes with the key of its analysis (`Key`: however the store identifies it).
pub(crate) trait RowStreams {
    /// How a child names its analysis.
    type Key: PartialEq;
    /// The next analysis and its key, with findings filled where they live on the row.
    fn next_analysis(&mut self) -> Result<Option<(Self::Key, Analysis)>>;
    /// The next chunk (ordered by `chunk_index` within its analysis).
    fn next_chunk(&mut self) -> Result<Option<(Self::Key, Chunk)>>;
    /// The next artifact.
    fn next_artifact(&mut self) -> Result<Option<(Self::Key, Artifact)>>;
    /// The next finding, where findings are rows of their own (in their stored order).
    fn next_finding(&mut self) -> Result<Option<(Self::Key, Finding)>> {
        Ok(None)
    }
}

/// Calls `visit` with every analysis of `streams`, whole.
pub(crate) fn for_each_analysis<S: RowStreams>(
    streams: &mut S,
    visit: &mut dyn FnMut(Analysis) -> Result<()>,
) -> Result<()> {
    let mut next_chunk = streams.next_chunk()?;
    let mut next_artifact = streams.next_artifact()?;
    let mut next_finding = streams.next_finding()?;
    while let Some((key, mut analysis)) = streams.next_analysis()? {
        while let Some((_, chunk)) = next_chunk.take_if(|(owner, _)| *owner == key) {
            analysis.chunks.push(chunk);
            next_chunk = streams.next_chunk()?;
        }
        if let Some((_, artifact)) = next_artifact.take_if(|(owner, _)| *owner == key) {
            analysis.artifact = Some(artifact);
            next_artifact = streams.next_artifact()?;
        }
        while let Some((_, finding)) = next_finding.take_if(|(owner, _)| *owner == key) {
            analysis.findings.push(finding);
            next_finding = streams.next_finding()?;
        }
        visit(analysis)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;
    use std::collections::VecDeque;
    use uuid::Uuid;

    struct Lists {
        analyses: VecDeque<(u8, Analysis)>,
        chunks: VecDeque<(u8, Chunk)>,
        artifacts: VecDeque<(u8, Artifact)>,
        findings: VecDeque<(u8, Finding)>,
    }

    impl RowStreams for Lists {
        type Key = u8;
        fn next_analysis(&mut self) -> Result<Option<(u8, Analysis)>> {
            Ok(self.analyses.pop_front())
        }
        fn next_chunk(&mut self) -> Result<Option<(u8, Chunk)>> {
            Ok(self.chunks.pop_front())
        }
        fn next_artifact(&mut self) -> Result<Option<(u8, Artifact)>> {
            Ok(self.artifacts.pop_front())
        }
        fn next_finding(&mut self) -> Result<Option<(u8, Finding)>> {
            Ok(self.findings.pop_front())
        }
    }

    fn analysis(n: u8) -> Analysis {
        Analysis {
            id: Uuid::from_u128(n.into()),
            url: format!("https://example.com/{n}"),
            content_type: "documentation".into(),
            status: "completed".into(),
            created_at: Timestamp::from_unix_micros(i64::from(n)),
            findings: Vec::new(),
            chunks: Vec::new(),
            artifact: None,
        }
    }

    fn chunk(n: i64) -> Chunk {
        Chunk {
            id: Uuid::from_u128(1000 + n as u128),
            content: format!("chunk {n}"),
            section_title: None,
            section_path: None,
            content_type: "text".into(),
            chunk_index: n,
        }
    }

    #[test]
    fn children_go_to_their_analysis_and_childless_analyses_stay_empty() {
        let finding = Finding {
            agent: "a".into(),
            category: "c".into(),
            content: "f".into(),
            confidence: 0.5,
            metadata: None,
        };
        let artifact = Artifact {
            id: Uuid::from_u128(7),
            summary: None,
            key_findings: Vec::new(),
            metadata: Default::default(),
        };
        let mut lists = Lists {
            analyses: (1..=3).map(|n| (n, analysis(n))).collect(),
            chunks: [(1, chunk(0)), (1, chunk(1)), (3, chunk(0))].into(),
            artifacts: [(3, artifact.clone())].into(),
            findings: [(2, finding.clone()), (2, finding.clone())].into(),
        };
        let mut seen = Vec::new();
        for_each_analysis(&mut lists, &mut |a| {
            seen.push(a);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].chunks, vec![chunk(0), chunk(1)]);
        assert!(seen[0].findings.is_empty() && seen[0].artifact.is_none());
        assert!(seen[1].chunks.is_empty());
        assert_eq!(seen[1].findings, vec![finding.clone(), finding]);
        assert_eq!(seen[2].chunks, vec![chunk(0)]);
        assert_eq!(seen[2].artifact, Some(artifact));
    }
}
