//! A BERT encoder forward pass for CPU inference, on plain buffers.
//!
//! The same arithmetic as Hugging Face's `BertModel` (absolute positions, post-layer-norm), laid
//! out for speed on a CPU:
//! - the texts of a call are *packed*: their tokens lie one after another, with no padding, so
//!   every dense layer is one matrix product over all real tokens and no work goes into padding;
//! - attention runs per text (in parallel over texts), on that text's tokens only, so there is
//!   no mask and the scores of one head (length² values) stay in cache;
//! - the query, key and value projections are one product (the 1/√head_dim scale folded into the
//!   query weights at load); bias, activation, residual and layer norm are fused passes
//!   (`kernels.rs`);
//! - every intermediate lives in a [`Workspace`] reused from call to call.
//!
//! (Over 600 lines: the forward pass, its workspace and the weight loading are one unit whose
//! buffers are sized for each other; the kernels and the instruction-set levels are apart.)
//!
//! candle loads the weights (safetensors, any float type, Hugging Face names).
//!
//! The kernels and matrix products run at an instruction-set [`Level`] chosen at run time:
//! the best the CPU has unless [`BertEncoder::set_level`] asks for a lower one.

mod kernels;
mod level;

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use kernels::{Act, Matrix, Norm};
use rayon::prelude::*;
use serde::Deserialize;

pub use level::{Level, UnknownLevel};

/// The fields of a Hugging Face `config.json` that a BERT encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of every token vector.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Feed-forward activation.
    #[serde(default = "default_activation")]
    pub hidden_act: Activation,
    /// Longest input the position table covers.
    pub max_position_embeddings: usize,
    /// Token type (segment) vocabulary.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Only `absolute` is supported.
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_activation() -> Activation {
    Activation::Gelu
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

/// Feed-forward activation, as `config.json` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// GELU with the exact error function.
    Gelu,
    /// GELU's tanh approximation.
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluApproximate,
    /// ReLU.
    Relu,
}

/// A tensor's values as one flat `f32` vector.
fn values(t: Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
}

/// Weights of a layer norm.
struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<Self> {
        // Older checkpoints name the parameters gamma/beta.
        let (weight, bias) = match (vb.get(size, "weight"), vb.get(size, "bias")) {
            (Ok(w), Ok(b)) => (w, b),
            _ => (vb.get(size, "gamma")?, vb.get(size, "beta")?),
        };
        Ok(LayerNorm {
            weight: values(weight)?,
            bias: values(bias)?,
            eps: eps as f32,
        })
    }

    fn norm(&self) -> Norm<'_> {
        Norm {
            weight: &self.weight,
            bias: &self.bias,
            eps: self.eps,
        }
    }
}

/// A dense layer: `weight` is `(output, input)`, row-major, as stored by PyTorch.
struct Dense {
    weight: Vec<f32>,
    bias: Vec<f32>,
    input: usize,
    output: usize,
}

/// The weight `(output, input)` and bias of the dense layer under `vb`.
fn dense_tensors(vb: VarBuilder, input: usize, output: usize) -> Result<(Tensor, Tensor)> {
    Ok((vb.get((output, input), "weight")?, vb.get(output, "bias")?))
}

impl Dense {
    fn load(vb: VarBuilder, input: usize, output: usize) -> Result<Self> {
        let (weight, bias) = dense_tensors(vb, input, output)?;
        Self::from_tensors(weight, bias)
    }

    fn from_tensors(weight: Tensor, bias: Tensor) -> Result<Self> {
        let (output, input) = weight.dims2()?;
        Ok(Dense {
            weight: values(weight)?,
            bias: values(bias)?,
            input,
            output,
        })
    }

    /// `out ← x · weightᵀ` (no bias) for `x` of `(rows, input)`, `out` of `(rows, output)`.
    fn product(&self, level: Level, x: &[f32], out: &mut [f32]) {
        let rows = x.len() / self.input;
        let lhs = Matrix {
            data: x,
            rows,
            columns: self.input,
            row_stride: self.input,
            column_stride: 1,
        };
        let weight = Matrix {
            data: &self.weight,
            rows: self.output,
            columns: self.input,
            row_stride: self.input,
            column_stride: 1,
        };
        kernels::matmul(
            level,
            &mut out[..rows * self.output],
            self.output,
            lhs,
            weight.t(),
            true,
        );
    }
}

struct Layer {
    /// Query, key and value projections stacked (query rows pre-scaled).
    qkv: Dense,
    attention_output: Dense,
    attention_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    output_norm: LayerNorm,
}

impl Layer {
    fn load(vb: VarBuilder, c: &BertConfig) -> Result<Self> {
        let h = c.hidden_size;
        let attention = vb.pp("attention");
        let own = attention.pp("self");
        let scale = 1.0 / ((h / c.num_attention_heads) as f64).sqrt();
        let part = |name: &str| dense_tensors(own.pp(name), h, h);
        let ((qw, qb), (kw, kb), (vw, vb_)) = (part("query")?, part("key")?, part("value")?);
        Ok(Layer {
            qkv: Dense::from_tensors(
                Tensor::cat(&[&(qw * scale)?, &kw, &vw], 0)?,
                Tensor::cat(&[&(qb * scale)?, &kb, &vb_], 0)?,
            )?,
            attention_output: Dense::load(attention.pp("output").pp("dense"), h, h)?,
            attention_norm: LayerNorm::load(
                attention.pp("output").pp("LayerNorm"),
                h,
                c.layer_norm_eps,
            )?,
            intermediate: Dense::load(vb.pp("intermediate").pp("dense"), h, c.intermediate_size)?,
            output: Dense::load(vb.pp("output").pp("dense"), c.intermediate_size, h)?,
            output_norm: LayerNorm::load(vb.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
        })
    }
}

/// The buffers of one forward pass, kept between calls so that a pass allocates nothing once
/// they have grown to the largest batch seen.
#[derive(Default)]
pub struct Workspace {
    /// Token vectors `(tokens, hidden)`: the input and the output of every layer.
    x: Vec<f32>,
    /// Stacked query/key/value projections `(tokens, 3 · hidden)`.
    qkv: Vec<f32>,
    /// Attention output before its dense layer `(tokens, hidden)`.
    context: Vec<f32>,
    /// Attention block output `(tokens, hidden)`.
    attended: Vec<f32>,
    /// Feed-forward activations `(tokens, intermediate)`.
    inner: Vec<f32>,
    /// Attention scores of one head per text (length² values each).
    scores: Vec<f32>,
}

/// Grows `buffer` to at least `len` values and returns the first `len`.
fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// Cuts `buffer` into consecutive pieces of the given lengths.
fn split_by(mut buffer: &mut [f32], lengths: impl Iterator<Item = usize>) -> Vec<&mut [f32]> {
    let mut pieces = Vec::new();
    for len in lengths {
        let (piece, rest) = std::mem::take(&mut buffer).split_at_mut(len);
        pieces.push(piece);
        buffer = rest;
    }
    pieces
}

/// One tokenized text: token ids and token type ids, of the same length.
pub struct Tokens<'a> {
    /// Vocabulary ids.
    pub ids: &'a [u32],
    /// Segment ids (all 0 for a single sentence).
    pub types: &'a [u32],
}

/// A loaded BERT encoder.
pub struct BertEncoder {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    hidden: usize,
    intermediate: usize,
    heads: usize,
    vocab: usize,
    positions: usize,
    token_types: usize,
    activation: Act,
    level: Level,
}

impl BertEncoder {
    /// Loads the weights under `vb` (Hugging Face names: `embeddings.*`, `encoder.layer.N.*`).
    pub fn load(vb: VarBuilder, c: &BertConfig) -> Result<Self> {
        if let Some(kind) = c.position_embedding_type.as_deref() {
            if kind != "absolute" {
                candle_core::bail!(
                    "position_embedding_type {kind:?} is not supported (only absolute)"
                );
            }
        }
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            candle_core::bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                c.hidden_size,
                c.num_attention_heads
            );
        }
        let h = c.hidden_size;
        let e = vb.pp("embeddings");
        let table = |name: &str, rows: usize| -> Result<Vec<f32>> {
            values(e.pp(name).get((rows, h), "weight")?)
        };
        let encoder = vb.pp("encoder").pp("layer");
        Ok(BertEncoder {
            word: table("word_embeddings", c.vocab_size)?,
            position: table("position_embeddings", c.max_position_embeddings)?,
            token_type: table("token_type_embeddings", c.type_vocab_size)?,
            embedding_norm: LayerNorm::load(e.pp("LayerNorm"), h, c.layer_norm_eps)?,
            layers: (0..c.num_hidden_layers)
                .map(|i| Layer::load(encoder.pp(i), c))
                .collect::<Result<_>>()?,
            hidden: h,
            intermediate: c.intermediate_size,
            heads: c.num_attention_heads,
            vocab: c.vocab_size,
            positions: c.max_position_embeddings,
            token_types: c.type_vocab_size,
            activation: match c.hidden_act {
                Activation::Gelu => Act::GeluErf,
                Activation::GeluApproximate => Act::GeluTanh,
                Activation::Relu => Act::Relu,
            },
            level: Level::best(),
        })
    }

    /// Width of every token vector.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// The instruction-set level the forward pass runs at ([`Level::best`] after loading).
    pub fn level(&self) -> Level {
        self.level
    }

    /// Runs the forward pass at `level` (to compare levels, or test each on one machine).
    ///
    /// # Errors
    /// If this CPU does not support `level`; the level stays as it was.
    pub fn set_level(&mut self, level: Level) -> Result<()> {
        if !level.is_supported() {
            candle_core::bail!(
                "this CPU does not support the {level} kernels (the best it has: {})",
                Level::best()
            );
        }
        self.level = level;
        Ok(())
    }

    /// Token vectors of every text, packed: text `i`'s tokens are the rows after those of texts
    /// `0..i`, `hidden_size()` values each. The slice lives in `workspace`.
    pub fn forward<'w>(&self, texts: &[Tokens], workspace: &'w mut Workspace) -> Result<&'w [f32]> {
        let h = self.hidden;
        let mut tokens = 0;
        for (i, text) in texts.iter().enumerate() {
            let len = text.ids.len();
            if text.types.len() != len {
                candle_core::bail!(
                    "text {i}: {len} token ids but {} type ids",
                    text.types.len()
                );
            }
            if len > self.positions {
                candle_core::bail!(
                    "text {i}: {len} tokens, the model takes at most {}",
                    self.positions
                );
            }
            if let Some(&id) = text.ids.iter().find(|&&id| id as usize >= self.vocab) {
                candle_core::bail!(
                    "text {i}: token id {id} outside the vocabulary of {}",
                    self.vocab
                );
            }
            if let Some(&t) = text.types.iter().find(|&&t| t as usize >= self.token_types) {
                candle_core::bail!(
                    "text {i}: token type {t} outside the {} types",
                    self.token_types
                );
            }
            tokens += len;
        }
        let Workspace {
            x,
            qkv,
            context,
            attended,
            inner,
            scores,
        } = workspace;
        let lengths: Vec<usize> = texts.iter().map(|t| t.ids.len()).collect();
        let x = sized(x, tokens * h);
        let qkv = sized(qkv, tokens * 3 * h);
        let context = sized(context, tokens * h);
        let scores = sized(scores, lengths.iter().map(|n| n * n).sum());
        let attended = sized(attended, tokens * h);
        let inner = sized(inner, tokens * self.intermediate);
        let level = self.level;
        self.embed_tokens(texts, x);
        for layer in &self.layers {
            layer.qkv.product(level, x, qkv);
            kernels::add_bias(level, qkv, &layer.qkv.bias);
            self.attention(&lengths, qkv, context, scores);

            layer.attention_output.product(level, context, attended);
            kernels::bias_residual_norm(
                level,
                attended,
                &layer.attention_output.bias,
                x,
                &layer.attention_norm.norm(),
            );
            layer.intermediate.product(level, attended, inner);
            kernels::bias_activation(level, inner, &layer.intermediate.bias, self.activation);
            layer.output.product(level, inner, x);
            kernels::bias_residual_norm(
                level,
                x,
                &layer.output.bias,
                attended,
                &layer.output_norm.norm(),
            );
        }
        Ok(&workspace.x[..tokens * h])
    }

    /// `x ← norm(word + position + token type)` for every token of every text.
    fn embed_tokens(&self, texts: &[Tokens], x: &mut [f32]) {
        let h = self.hidden;
        let rows = split_by(x, texts.iter().map(|t| t.ids.len() * h));
        rows.into_par_iter().zip(texts).for_each(|(rows, text)| {
            for (position, (row, (&id, &kind))) in rows
                .chunks_exact_mut(h)
                .zip(text.ids.iter().zip(text.types))
                .enumerate()
            {
                let word = &self.word[id as usize * h..][..h];
                let place = &self.position[position * h..][..h];
                let segment = &self.token_type[kind as usize * h..][..h];
                for (((v, &w), &p), &s) in row.iter_mut().zip(word).zip(place).zip(segment) {
                    *v = w + p + s;
                }
            }
        });
        kernels::layer_norm(self.level, x, &self.embedding_norm.norm());
    }

    /// Self-attention of every text over its own tokens: `context` (`(tokens, hidden)`) from the
    /// biased projections `qkv` (`(tokens, 3 · hidden)`); `scores` holds length² values per text.
    fn attention(&self, lengths: &[usize], qkv: &[f32], context: &mut [f32], scores: &mut [f32]) {
        let h = self.hidden;
        let head_dim = h / self.heads;
        let width = 3 * h;
        let starts: Vec<usize> = lengths
            .iter()
            .scan(0, |row, &n| {
                let start = *row;
                *row += n;
                Some(start)
            })
            .collect();
        let contexts = split_by(context, lengths.iter().map(|n| n * h));
        let score_blocks = split_by(scores, lengths.iter().map(|n| n * n));
        contexts
            .into_par_iter()
            .zip(score_blocks)
            .zip(lengths.par_iter().zip(&starts))
            .for_each(|((context, scores), (&n, &start))| {
                if n == 0 {
                    return;
                }
                let rows = &qkv[start * width..(start + n) * width];
                let view = |column: usize| Matrix {
                    data: &rows[column..],
                    rows: n,
                    columns: head_dim,
                    row_stride: width,
                    column_stride: 1,
                };
                for head in 0..self.heads {
                    let column = head * head_dim;
                    let (query, key, value) =
                        (view(column), view(h + column), view(2 * h + column));
                    kernels::matmul(self.level, scores, n, query, key.t(), false);
                    kernels::softmax_rows(self.level, scores, n);
                    let weights = Matrix {
                        data: scores,
                        rows: n,
                        columns: n,
                        row_stride: n,
                        column_stride: 1,
                    };
                    kernels::matmul(self.level, &mut context[column..], h, weights, value, false);
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use std::collections::HashMap;

    /// A small BERT with deterministic pseudo-random weights.
    fn tiny_model() -> BertEncoder {
        let config: BertConfig = serde_json::from_value(serde_json::json!({
            "vocab_size": 30, "hidden_size": 16, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 32,
            "max_position_embeddings": 24, "type_vocab_size": 2
        }))
        .unwrap();
        let mut seed = 0u32;
        let mut tensors = HashMap::new();
        let mut add = |name: String, shape: &[usize]| {
            seed += 1;
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|i| {
                    ((i as u32 + 1).wrapping_mul(2_654_435_761u32.wrapping_mul(seed)) >> 8) as f32
                })
                .map(|v| v / (1u32 << 24) as f32 - 0.5)
                .collect();
            tensors.insert(name, Tensor::from_vec(values, shape, &Device::Cpu).unwrap());
        };
        let (h, i) = (16, 32);
        for (table, rows) in [("word", 30), ("position", 24), ("token_type", 2)] {
            add(format!("embeddings.{table}_embeddings.weight"), &[rows, h]);
        }
        let norm = |add: &mut dyn FnMut(String, &[usize]), prefix: String| {
            add(format!("{prefix}.weight"), &[h]);
            add(format!("{prefix}.bias"), &[h]);
        };
        norm(&mut add, "embeddings.LayerNorm".into());
        for layer in 0..2 {
            let p = format!("encoder.layer.{layer}");
            for part in ["query", "key", "value"] {
                add(format!("{p}.attention.self.{part}.weight"), &[h, h]);
                add(format!("{p}.attention.self.{part}.bias"), &[h]);
            }
            add(format!("{p}.attention.output.dense.weight"), &[h, h]);
            add(format!("{p}.attention.output.dense.bias"), &[h]);
            norm(&mut add, format!("{p}.attention.output.LayerNorm"));
            add(format!("{p}.intermediate.dense.weight"), &[i, h]);
            add(format!("{p}.intermediate.dense.bias"), &[i]);
            add(format!("{p}.output.dense.weight"), &[h, i]);
            add(format!("{p}.output.dense.bias"), &[h]);
            norm(&mut add, format!("{p}.output.LayerNorm"));
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        BertEncoder::load(vb, &config).unwrap()
    }

    #[test]
    fn a_text_packed_with_others_gets_the_same_vectors_as_alone() {
        let model = tiny_model();
        let texts: [&[u32]; 3] = [&[1, 5, 9, 2], &[1, 7, 7, 7, 3, 11, 2], &[1, 2]];
        let types = [0u32; 8];
        let tokens: Vec<Tokens> = texts
            .iter()
            .map(|ids| Tokens {
                ids,
                types: &types[..ids.len()],
            })
            .collect();
        let mut workspace = Workspace::default();
        let packed = model.forward(&tokens, &mut workspace).unwrap().to_vec();
        assert_eq!(packed.len(), (4 + 7 + 2) * 16);
        let mut row = 0;
        for text in &tokens {
            let alone = model
                .forward(std::slice::from_ref(text), &mut Workspace::default())
                .unwrap()
                .to_vec();
            let same = &packed[row * 16..][..alone.len()];
            for (a, b) in alone.iter().zip(same) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
            row += text.ids.len();
        }
        // The texts differ, so do their vectors: the check above compares something real.
        assert_ne!(&packed[..16], &packed[4 * 16..5 * 16]);
    }

    #[test]
    fn every_level_the_cpu_supports_gives_the_baseline_vectors() {
        let mut model = tiny_model();
        assert_eq!(model.level(), Level::best());
        let ids = [1u32, 5, 9, 2, 7, 7, 3, 11, 2, 4, 6, 8, 10, 12, 14, 16, 18];
        let types = [0u32; 17];
        let texts = [
            Tokens {
                ids: &ids,
                types: &types,
            },
            Tokens {
                ids: &ids[..5],
                types: &types[..5],
            },
        ];
        let mut baseline: Option<Vec<f32>> = None;
        for level in Level::supported() {
            eprintln!("encoder: level {level}");
            model.set_level(level).unwrap();
            assert_eq!(model.level(), level);
            let got = model
                .forward(&texts, &mut Workspace::default())
                .unwrap()
                .to_vec();
            let base = baseline.get_or_insert_with(|| got.clone());
            for (i, (a, b)) in got.iter().zip(base.iter()).enumerate() {
                assert!((a - b).abs() < 1e-4, "{level}, value {i}: {a} vs {b}");
            }
        }
        for level in Level::ALL.into_iter().filter(|l| !l.is_supported()) {
            let message = model.set_level(level).unwrap_err().to_string();
            assert!(message.contains("does not support"), "{message}");
        }
    }

    #[test]
    fn bad_tokens_are_refused_not_read_out_of_bounds() {
        let model = tiny_model();
        let mut workspace = Workspace::default();
        let forward = |ids: &[u32], types: &[u32], ws: &mut Workspace| {
            model
                .forward(&[Tokens { ids, types }], ws)
                .err()
                .map(|e| e.to_string())
        };
        let long = [1u32; 25];
        let message = forward(&long, &[0; 25], &mut workspace).unwrap();
        assert!(message.contains("25 tokens"), "{message}");
        let message = forward(&[1, 30], &[0, 0], &mut workspace).unwrap();
        assert!(message.contains("token id 30"), "{message}");
        let message = forward(&[1, 2], &[0, 2], &mut workspace).unwrap();
        assert!(message.contains("token type 2"), "{message}");
        let message = forward(&[1, 2], &[0], &mut workspace).unwrap();
        assert!(message.contains("type ids"), "{message}");
    }
}
