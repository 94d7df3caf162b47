//! The canonical format, byte for byte: key order, indentation, escapes, sorted free-form keys,
//! timestamps, empty arrays, a final newline. If this test changes, FORMAT.md changes too.

use goldset::format::writer::{metadata_file_content, BackupWriter};
use goldset::model::{Analysis, Artifact, Chunk, Counts, Finding};
use goldset::timestamp::Timestamp;
use serde_json::json;
use uuid::Uuid;

#[test]
fn canonical_bytes() {
    let analyses = vec![
        Analysis {
            id: Uuid::parse_str("00000000-0000-4000-8000-000000000001").unwrap(),
            url: "https://www.sqlite.org/wal.html".into(),
            content_type: "documentation".into(),
            status: "completed".into(),
            created_at: Timestamp::parse("2025-11-15 08:20:00.5+01:00").unwrap(),
            findings: vec![
                Finding {
                    agent: "summarizer".into(),
                    category: "insight".into(),
                    content: "Quotes \" and \\ and\ttab\nnewline, naïve → 東京 🙂, bell \u{7}"
                        .into(),
                    confidence: 1.0,
                    metadata: Some(
                        json!({"zeta": 1, "alpha": [1, 2.5, null], "Beta": {"y": true, "x": "é"}})
                            .as_object()
                            .unwrap()
                            .clone(),
                    ),
                },
                Finding {
                    agent: "critic".into(),
                    category: "risk".into(),
                    content: "No metadata.".into(),
                    confidence: 0.05,
                    metadata: None,
                },
            ],
            chunks: vec![Chunk {
                id: Uuid::parse_str("00000000-0000-4000-8000-0000000000c1").unwrap(),
                content: "Write-ahead logging.".into(),
                section_title: None,
                section_path: Some("WAL > Overview".into()),
                content_type: "text".into(),
                chunk_index: 0,
            }],
            artifact: Some(Artifact {
                id: Uuid::parse_str("00000000-0000-4000-8000-0000000000a1").unwrap(),
                summary: None,
                key_findings: vec![json!("WAL"), json!(2)],
                metadata: serde_json::Map::new(),
            }),
        },
        Analysis {
            id: Uuid::parse_str("00000000-0000-4000-8000-000000000002").unwrap(),
            url: "https://www.rfc-editor.org/rfc/rfc3339".into(),
            content_type: "specification".into(),
            status: "completed".into(),
            created_at: Timestamp::parse("2025-11-16T00:00:00Z").unwrap(),
            findings: vec![],
            chunks: vec![],
            artifact: None,
        },
    ];
    let mut counts = Counts::default();
    analyses.iter().for_each(|a| counts.add(a));
    let created = Timestamp::parse("2026-01-02T03:04:05.000006Z").unwrap();
    let mut writer = BackupWriter::new(Vec::new(), created, counts).unwrap();
    for a in &analyses {
        writer.write_analysis(a).unwrap();
    }
    let bytes = writer.finish().unwrap();
    let expected = r#"{
  "version": "1.0",
  "created_at": "2026-01-02T03:04:05.000006Z",
  "metadata": {
    "total_analyses": 2,
    "total_chunks": 1,
    "total_artifacts": 1
  },
  "analyses": [
    {
      "id": "00000000-0000-4000-8000-000000000001",
      "url": "https://www.sqlite.org/wal.html",
      "content_type": "documentation",
      "status": "completed",
      "created_at": "2025-11-15T07:20:00.500000Z",
      "findings": [
        {
          "agent": "summarizer",
          "category": "insight",
          "content": "Quotes \" and \\ and\ttab\nnewline, naïve → 東京 🙂, bell \u0007",
          "confidence": 1.0,
          "metadata": {
            "Beta": {
              "x": "é",
              "y": true
            },
            "alpha": [
              1,
              2.5,
              null
            ],
            "zeta": 1
          }
        },
        {
          "agent": "critic",
          "category": "risk",
          "content": "No metadata.",
          "confidence": 0.05
        }
      ],
      "chunks": [
        {
          "id": "00000000-0000-4000-8000-0000000000c1",
          "content": "Write-ahead logging.",
          "section_title": null,
          "section_path": "WAL > Overview",
          "content_type": "text",
          "chunk_index": 0
        }
      ],
      "artifact": {
        "id": "00000000-0000-4000-8000-0000000000a1",
        "summary": null,
        "key_findings": [
          "WAL",
          2
        ],
        "metadata": {}
      }
    },
    {
      "id": "00000000-0000-4000-8000-000000000002",
      "url": "https://www.rfc-editor.org/rfc/rfc3339",
      "content_type": "specification",
      "status": "completed",
      "created_at": "2025-11-16T00:00:00Z",
      "findings": [],
      "chunks": [],
      "artifact": null
    }
  ]
}
"#;
    assert_eq!(String::from_utf8(bytes).unwrap(), expected);
    assert_eq!(
        String::from_utf8(metadata_file_content(&counts).unwrap()).unwrap(),
        "{\n  \"total_analyses\": 2,\n  \"total_chunks\": 1,\n  \"total_artifacts\": 1\n}\n"
    );
}

#[test]
fn empty_backup_bytes() {
    let created = Timestamp::parse("2026-01-02T03:04:05Z").unwrap();
    let bytes = BackupWriter::new(Vec::new(), created, Counts::default())
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "{\n  \"version\": \"1.0\",\n  \"created_at\": \"2026-01-02T03:04:05Z\",\n  \"metadata\": {\n    \"total_analyses\": 0,\n    \"total_chunks\": 0,\n    \"total_artifacts\": 0\n  },\n  \"analyses\": []\n}\n"
    );
}

#[test]
fn writer_refuses_content_that_disagrees_with_its_counts() {
    let created = Timestamp::parse("2026-01-02T03:04:05Z").unwrap();
    let counts = Counts {
        total_analyses: 1,
        total_chunks: 0,
        total_artifacts: 0,
    };
    assert!(BackupWriter::new(Vec::new(), created, counts)
        .unwrap()
        .finish()
        .is_err());
}
