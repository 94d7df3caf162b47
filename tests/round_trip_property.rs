//! Property: any dataset written as a backup, restored and backed up again gives the same bytes
//! (apart from the top-level `created_at`) and the same records.

use goldset::embed::HashEmbedder;
use goldset::format::reader::{read_backup, Item};
use goldset::format::validate::{MetadataFile, UrlPolicy, Validator};
use goldset::format::writer::{same_content, BackupWriter};
use goldset::model::{Analysis, Artifact, Chunk, Counts, Finding, StatusFilter};
use goldset::ops::backup::{backup, BackupOptions};
use goldset::ops::restore::{restore, OnConflict, RestoreOptions};
use goldset::ops::NoProgress;
use goldset::store::sqlite::SqliteStore;
use goldset::timestamp::Timestamp;
use proptest::prelude::*;
use serde_json::{Map, Value};
use std::io::BufReader;
use uuid::Uuid;

/// Any text without NUL (which the format refuses): quotes, backslashes, controls, emoji, CJK.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\u{0}]{0,24}",
        "[a-z \"\\\\\t\n\r\u{1}\u{7f}é東京🙂]{0,24}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(text(), json_value(), 0..4).prop_map(|m| m.into_iter().collect())
}

fn finding() -> impl Strategy<Value = Finding> {
    (
        text(),
        text(),
        text(),
        0.0..=1.0f64,
        prop::option::of(object()),
    )
        .prop_map(|(agent, category, content, confidence, metadata)| Finding {
            agent,
            category,
            content,
            confidence,
            metadata,
        })
}

fn analysis() -> impl Strategy<Value = Analysis> {
    let chunk = (
        any::<u128>(),
        text(),
        prop::option::of(text()),
        prop::option::of(text()),
        text(),
    );
    let artifact = (
        any::<u128>(),
        prop::option::of(text()),
        prop::collection::vec(json_value(), 0..3),
        object(),
    );
    (
        any::<u128>(),
        "https://[a-z]{1,10}\\.org/[a-z0-9]{0,8}",
        text(),
        prop::sample::select(vec!["completed", "in_progress", "failed"]),
        -2_208_988_800_000_000i64..4_102_444_800_000_000i64,
        prop::collection::vec(finding(), 0..3),
        prop::collection::vec(chunk, 0..4),
        prop::option::of(artifact),
    )
        .prop_map(
            |(id, url, content_type, status, micros, findings, chunks, artifact)| Analysis {
                id: Uuid::from_u128(id),
                url,
                content_type,
                status: status.to_owned(),
                created_at: Timestamp::from_unix_micros(micros),
                findings,
                chunks: chunks
                    .into_iter()
                    .enumerate()
                    .map(
                        |(i, (cid, content, section_title, section_path, content_type))| Chunk {
                            id: Uuid::from_u128(cid),
                            content,
                            section_title,
                            section_path,
                            content_type,
                            chunk_index: i as i64,
                        },
                    )
                    .collect(),
                artifact: artifact.map(|(aid, summary, key_findings, metadata)| Artifact {
                    id: Uuid::from_u128(aid),
                    summary,
                    key_findings,
                    metadata,
                }),
            },
        )
}

fn read_all(path: &std::path::Path) -> Vec<Analysis> {
    let policy = UrlPolicy::default();
    let mut validator = Validator::new("b.json", &policy);
    let mut out = Vec::new();
    let file = std::fs::File::open(path).unwrap();
    let header = read_backup(BufReader::new(file), |item| {
        if let Item::Analysis(raw, at) = item {
            out.push(validator.check(raw, at).expect("valid"));
        }
        Ok::<(), ()>(())
    })
    .unwrap();
    let (report, _) = validator.finish(&header, MetadataFile::Absent("none".into()));
    assert!(!report.has_errors(), "{:?}", report.first_errors(5));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn restore_then_backup_gives_the_same_file(mut analyses in prop::collection::vec(analysis(), 0..6)) {
        analyses.sort_by_key(|a| (a.created_at, a.id));
        let dir = tempfile::tempdir().unwrap();
        let original = dir.path().join("a.json");
        let mut counts = Counts::default();
        analyses.iter().for_each(|a| counts.add(a));
        let mut writer = BackupWriter::new(std::fs::File::create(&original).unwrap(), Timestamp::now(), counts).unwrap();
        for a in &analyses {
            writer.write_analysis(a).unwrap();
        }
        writer.finish().unwrap();

        let mut store = SqliteStore::open(&dir.path().join("db.sqlite"), &goldset::store::OpenOptions { create: true, ..Default::default() }).unwrap();
        let options = RestoreOptions {
            file: original.clone(),
            metadata_file: None,
            replace: true,
            on_conflict: OnConflict::Fail,
            dry_run: false,
            url_policy: UrlPolicy::default(),
            batch_chunks: 3,
        };
        let summary = restore(&mut store, &HashEmbedder::new(16), &options, &NoProgress).unwrap();
        prop_assert_eq!(summary.restored, counts);

        let again = dir.path().join("b.json");
        let options = BackupOptions {
            file: again.clone(),
            metadata_file: dir.path().join("b_metadata.json"),
            filter: StatusFilter::All,
            allow_empty: true,
        };
        backup(&mut store, &options, &NoProgress).unwrap();
        let same = same_content(
            BufReader::new(std::fs::File::open(&original).unwrap()),
            BufReader::new(std::fs::File::open(&again).unwrap()),
        )
        .unwrap();
        prop_assert!(same, "bytes differ:\n{}\n---\n{}",
            std::fs::read_to_string(&original).unwrap(), std::fs::read_to_string(&again).unwrap());
        prop_assert_eq!(read_all(&again), analyses);
    }
}
