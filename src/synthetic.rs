//! Deterministic synthetic datasets, for benchmarks, tests and demos: same seed, same data.
//!
//! Text is drawn from a small vocabulary so that it looks like prose of 400–1500 characters;
//! it means nothing. Analyses are generated (and written) one at a time, so a dataset of any size
//! takes constant memory.

use crate::format::writer::BackupWriter;
use crate::model::{Analysis, Artifact, Chunk, Counts, Finding};
use crate::timestamp::Timestamp;
use serde_json::{json, Map};
use std::io::{self, Write};
use uuid::Uuid;

const WORDS: &[&str] = &[
    "golden",
    "dataset",
    "retrieval",
    "chunk",
    "embedding",
    "backup",
    "restore",
    "verify",
    "schema",
    "index",
    "vector",
    "cosine",
    "query",
    "document",
    "section",
    "analysis",
    "finding",
    "artifact",
    "model",
    "token",
    "latency",
    "recall",
    "precision",
    "evaluation",
    "regression",
    "snapshot",
    "transaction",
    "commit",
    "rollback",
    "stream",
    "memory",
    "format",
    "version",
    "checksum",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "with",
    "on",
    "as",
    "by",
    "from",
    "naïve",
    "café",
    "données",
    "検索",
    "🙂",
];

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Number of analyses.
    pub analyses: u64,
    /// Chunks per analysis.
    pub chunks_per_analysis: u64,
    /// Seed of the generator.
    pub seed: u64,
}

/// splitmix64: tiny, fast, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn uuid(&mut self) -> Uuid {
        let v = (u128::from(self.next()) << 64) | u128::from(self.next());
        uuid::Builder::from_random_bytes(v.to_be_bytes()).into_uuid()
    }
    fn text(&mut self, min_chars: usize, max_chars: usize) -> String {
        let target = min_chars + self.below((max_chars - min_chars + 1) as u64) as usize;
        let mut s = String::with_capacity(target + 16);
        while s.chars().count() < target {
            if !s.is_empty() {
                s.push(if self.below(12) == 0 { '.' } else { ' ' });
                if s.ends_with('.') {
                    s.push(' ');
                }
            }
            s.push_str(WORDS[self.below(WORDS.len() as u64) as usize]);
        }
        s
    }
}

/// Calls `emit` for each analysis of the dataset, in backup order.
pub fn generate(spec: Spec, mut emit: impl FnMut(Analysis) -> io::Result<()>) -> io::Result<()> {
    let mut rng = Rng(spec.seed);
    let start = Timestamp::parse("2025-01-01T00:00:00Z")
        .expect("valid")
        .unix_micros();
    for n in 0..spec.analyses {
        let id = rng.uuid();
        let created_at = Timestamp::from_unix_micros(
            start + n as i64 * 60_000_000 + rng.below(1_000_000) as i64,
        );
        let findings = (0..2)
            .map(|i| Finding {
                agent: ["summarizer", "critic", "fact_checker"][rng.below(3) as usize].into(),
                category: ["insight", "risk", "fact"][rng.below(3) as usize].into(),
                content: rng.text(40, 160),
                confidence: (rng.below(101) as f64) / 100.0,
                metadata: (i == 0).then(|| {
                    let mut m = Map::new();
                    m.insert(
                        "source_chunk".into(),
                        json!(rng.below(spec.chunks_per_analysis.max(1))),
                    );
                    m
                }),
            })
            .collect();
        let chunks = (0..spec.chunks_per_analysis)
            .map(|i| Chunk {
                id: rng.uuid(),
                content: rng.text(400, 1500),
                section_title: Some(format!("Section {i}")),
                section_path: (i % 4 != 3).then(|| format!("Guide > Section {i}")),
                content_type: "text".into(),
                chunk_index: i as i64,
            })
            .collect();
        let artifact = (rng.below(10) != 0).then(|| Artifact {
            id: rng.uuid(),
            summary: Some(rng.text(80, 300)),
            key_findings: vec![json!(rng.text(20, 60)), json!(rng.text(20, 60))],
            metadata: {
                let mut m = Map::new();
                m.insert("model".into(), json!("synthetic-v1"));
                m.insert("tokens".into(), json!(rng.below(5000)));
                m
            },
        });
        emit(Analysis {
            id,
            url: format!("https://docs.goldset.dev/synthetic/{n}"),
            content_type: "documentation".into(),
            status: "completed".into(),
            created_at,
            findings,
            chunks,
            artifact,
        })?;
    }
    Ok(())
}

/// The counts of [`generate`]'s output (it is generated once to count, and nothing is kept).
pub fn counts(spec: Spec) -> io::Result<Counts> {
    let mut counts = Counts::default();
    generate(spec, |a| {
        counts.add(&a);
        Ok(())
    })?;
    Ok(counts)
}

/// Writes the dataset as a backup file to `out`.
pub fn write_backup<W: Write>(spec: Spec, out: W) -> io::Result<Counts> {
    let counts = counts(spec)?;
    let created = Timestamp::parse("2026-01-01T00:00:00Z").expect("valid");
    let mut writer = BackupWriter::new(out, created, counts)?;
    generate(spec, |a| writer.write_analysis(&a))?;
    writer.finish()?;
    Ok(counts)
}
