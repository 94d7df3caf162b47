//! Property: any dataset written as a backup, restored and backed up again gives the same bytes
//! (apart from the top-level `created_at`) and the same records.

use goldset::embed::HashEmbedder;
use goldset::format::reader::{read_backup, Item};
use goldset::format::validate::{canonical_numbers, MetadataFile, UrlPolicy, Validator};
use goldset::format::writer::{same_content, BackupWriter};
use goldset::model::{Analysis, Artifact, Chunk, Counts, Finding, StatusFilter};
use goldset::ops::backup::{backup, BackupOptions};
use goldset::ops::restore::{restore, OnConflict, RestoreOptions};
use goldset::ops::NoProgress;
use goldset::store::sqlite::SqliteStore;
use goldset::store::{OpenOptions, Store};
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

/// Writes `analyses` as a backup, restores it into `store`, backs it up again and checks that
/// the bytes and the records are the same.
fn round_trip(store: &mut dyn Store, mut analyses: Vec<Analysis>) -> Result<(), TestCaseError> {
    analyses.sort_by_key(|a| (a.created_at, a.id));
    // Numbers take their canonical form on reading (FORMAT.md §4.6): compare with that.
    for a in &mut analyses {
        for f in &mut a.findings {
            f.confidence += 0.0;
            f.metadata
                .iter_mut()
                .flat_map(|m| m.values_mut())
                .for_each(canonical_numbers);
        }
        if let Some(r) = &mut a.artifact {
            r.key_findings.iter_mut().for_each(canonical_numbers);
            r.metadata.values_mut().for_each(canonical_numbers);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("a.json");
    let mut counts = Counts::default();
    analyses.iter().for_each(|a| counts.add(a));
    let mut writer = BackupWriter::new(
        std::fs::File::create(&original).unwrap(),
        Timestamp::now(),
        counts,
    )
    .unwrap();
    for a in &analyses {
        writer.write_analysis(a).unwrap();
    }
    writer.finish().unwrap();

    let options = RestoreOptions {
        file: original.clone(),
        metadata_file: None,
        replace: true,
        on_conflict: OnConflict::Fail,
        dry_run: false,
        url_policy: UrlPolicy::default(),
        batch_chunks: 3,
        use_cache: true,
        allow_cascade: false,
        in_bulk: false,
    };
    let summary = restore(store, &HashEmbedder::new(16), &options, &NoProgress).unwrap();
    prop_assert_eq!(summary.restored, counts);

    let again = dir.path().join("b.json");
    let options = BackupOptions {
        file: again.clone(),
        metadata_file: dir.path().join("b_metadata.json"),
        filter: StatusFilter::All,
        allow_empty: true,
    };
    backup(store, &options, &NoProgress).unwrap();
    let same = same_content(
        BufReader::new(std::fs::File::open(&original).unwrap()),
        BufReader::new(std::fs::File::open(&again).unwrap()),
    )
    .unwrap();
    prop_assert!(
        same,
        "bytes differ:\n{}\n---\n{}",
        std::fs::read_to_string(&original).unwrap(),
        std::fs::read_to_string(&again).unwrap()
    );
    prop_assert_eq!(read_all(&again), analyses);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn sqlite_restore_then_backup_gives_the_same_file(analyses in prop::collection::vec(analysis(), 0..6)) {
        let dir = tempfile::tempdir().unwrap();
        let options = OpenOptions { create: true, ..Default::default() };
        let mut store = SqliteStore::open(&dir.path().join("db.sqlite"), &options).unwrap();
        round_trip(&mut store, analyses)?;
    }
}

#[cfg(feature = "postgres")]
/// One PostgreSQL store (in a schema of its own) for all the cases of the PostgreSQL property.
fn postgres_store() -> &'static std::sync::Mutex<Box<dyn Store + Send>> {
    static STORE: std::sync::OnceLock<std::sync::Mutex<Box<dyn Store + Send>>> =
        std::sync::OnceLock::new();
    STORE.get_or_init(|| {
        let url = crate::common::pg_url();
        let schema = format!("goldset_prop_{}", std::process::id());
        let options = OpenOptions {
            create: true,
            schema,
            ..Default::default()
        };
        let store = goldset::store::postgres::PostgresStore::open(&url, &options).unwrap();
        std::sync::Mutex::new(Box::new(store) as Box<dyn Store + Send>)
    })
}

#[cfg(feature = "postgres")]
/// The property on PostgreSQL: `postgres_restore_then_backup_gives_the_same_file::in_postgres`,
/// ignored like every PostgreSQL test unless included.
mod postgres_restore_then_backup_gives_the_same_file {
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        #[ignore = "needs PostgreSQL: scripts/test, or GOLDSET_TEST_PG_URL=… cargo test -- --include-ignored"]
        fn in_postgres(analyses in prop::collection::vec(analysis(), 0..6)) {
            let mut store = postgres_store().lock().unwrap();
            round_trip(store.as_mut(), analyses)?;
        }
    }
}
