//! `local:PATH_OR_ID` — a sentence-transformers model (BERT family) run in-process on the CPU
//! with candle: `tokenizer.json`, `config.json`, `model.safetensors`; pooling from
//! `1_Pooling/config.json`; `Normalize` honoured when `modules.json` lists it; truncation at
//! `max_seq_length` from `sentence_bert_config.json` (a packaged `tokenizer.json` may carry a
//! shorter truncation and a fixed padding of its own: both are replaced).

use super::{EmbedError, Embedder};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    Mean,
    Cls,
    Max,
    MeanSqrtLen,
}

/// See the module documentation.
pub struct LocalEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
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

/// Finds a model: a directory, or a Hugging Face id in the local hub cache (`HF_HOME`,
/// `~/.cache/huggingface/hub`).
pub fn locate(path_or_id: &str) -> Result<PathBuf, EmbedError> {
    let direct = PathBuf::from(path_or_id);
    if direct.join("config.json").is_file() {
        return Ok(direct);
    }
    let hub = std::env::var_os("HF_HUB_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
        });
    if let Some(hub) = &hub {
        let repo = hub.join(format!("models--{}", path_or_id.replace('/', "--")));
        let revision = std::fs::read_to_string(repo.join("refs/main")).unwrap_or_default();
        let snapshot = repo.join("snapshots").join(revision.trim());
        if !revision.trim().is_empty() && snapshot.join("config.json").is_file() {
            return Ok(snapshot);
        }
    }
    Err(EmbedError::InvalidSpec {
        spec: format!("local:{path_or_id}"),
        reason: format!(
            "no model directory (config.json, tokenizer.json, model.safetensors) at {path_or_id}{}; \
             downloading is not built in: fetch the model once (e.g. huggingface-cli download) or give its directory",
            hub.map(|h| format!(" nor in the Hugging Face cache {}", h.display())).unwrap_or_default()
        ),
    })
}

impl LocalEmbedder {
    /// Loads the model in `dir`; `name` identifies it (stored with every embedding, with a
    /// digest of the weights so that two different models never share an id).
    pub fn load(dir: &Path, name: &str) -> Result<Self, EmbedError> {
        let config: Config =
            serde_json::from_value(read_json(&dir.join("config.json"))?).map_err(|e| {
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
        let pad_token = tokenizer
            .id_to_token(config.pad_token_id as u32)
            .unwrap_or_else(|| "[PAD]".into());
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id: config.pad_token_id as u32,
            pad_token,
            ..Default::default()
        }));

        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(failed(format!(
                "{}: missing (only safetensors weights are supported)",
                weights.display()
            )));
        }
        let digest = {
            use sha2::{Digest, Sha256};
            let bytes = std::fs::read(&weights)
                .map_err(|e| failed(format!("{}: {e}", weights.display())))?;
            Sha256::digest(&bytes)
                .iter()
                .take(6)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let device = Device::Cpu;
        // SAFETY: the file is mapped read-only and not modified while the model lives.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }
            .map_err(failed)?;
        let model = BertModel::load(vb.clone(), &config)
            .or_else(|_| BertModel::load(vb.pp("bert"), &config))
            .map_err(|e| failed(format!("{}: {e}", weights.display())))?;
        let dimension = pooling_config["word_embedding_dimension"]
            .as_u64()
            .map(|d| d as usize)
            .unwrap_or(config.hidden_size);
        Ok(LocalEmbedder {
            model,
            tokenizer,
            device,
            pooling,
            normalize,
            dimension,
            model_id: format!("{name}@{digest}"),
        })
    }

    fn forward(&self, texts: &[&str]) -> candle_core::Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let rows = encodings.len();
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings
                .iter()
                .flat_map(|e| f(e).iter().copied())
                .collect()
        };
        let ids = Tensor::from_vec(flat(&|e| e.get_ids()), (rows, len), &self.device)?;
        let types = Tensor::from_vec(flat(&|e| e.get_type_ids()), (rows, len), &self.device)?;
        let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), (rows, len), &self.device)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (rows, len, hidden)
        let mask_f = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (rows, len, 1)
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Max => {
                // Padding must never win the max.
                let penalty = ((mask_f.ones_like()? - &mask_f)? * -1e9)?;
                hidden.broadcast_add(&penalty)?.max(1)?
            }
            Pooling::Mean | Pooling::MeanSqrtLen => {
                let summed = hidden.broadcast_mul(&mask_f)?.sum(1)?; // (rows, hidden)
                let counts = mask_f.sum(1)?.clamp(1e-9, f64::MAX)?; // (rows, 1)
                let divisor = if self.pooling == Pooling::Mean {
                    counts
                } else {
                    counts.sqrt()?
                };
                summed.broadcast_div(&divisor)?
            }
        };
        let pooled = if self.normalize {
            let norm = pooled
                .sqr()?
                .sum_keepdim(D::Minus1)?
                .sqrt()?
                .clamp(1e-12, f64::MAX)?;
            pooled.broadcast_div(&norm)?
        } else {
            pooled
        };
        pooled.to_vec2::<f32>()
    }
}

impl Embedder for LocalEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.forward(texts).map_err(failed)
    }

    fn preferred_batch_size(&self) -> usize {
        32
    }
}
