//! A BERT encoder forward pass for CPU inference, on candle tensors.
//!
//! The same arithmetic as Hugging Face's `BertModel` (absolute positions, post-layer-norm), laid
//! out for speed on a CPU: the query, key and value projections are one matrix product (the
//! 1/√head_dim scale folded into the query weights at load), the attention mask becomes one
//! additive tensor per batch, softmax is candle's fused last-dimension kernel, and every dense
//! layer is a single 2-D product over all tokens of the batch.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::Deserialize;

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
    /// Padding token id.
    #[serde(default)]
    pub pad_token_id: usize,
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

/// Layer norm over the last dimension.
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
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
            weight,
            bias,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps)
    }
}

/// The weight `(output, input)` and bias of a dense layer.
fn dense(vb: VarBuilder, input: usize, output: usize) -> Result<(Tensor, Tensor)> {
    Ok((vb.get((output, input), "weight")?, vb.get(output, "bias")?))
}

fn linear(vb: VarBuilder, input: usize, output: usize) -> Result<Linear> {
    let (weight, bias) = dense(vb, input, output)?;
    Ok(Linear::new(weight, Some(bias)))
}

struct Layer {
    /// Query, key and value projections stacked (query rows pre-scaled).
    qkv: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

impl Layer {
    fn load(vb: VarBuilder, c: &BertConfig) -> Result<Self> {
        let h = c.hidden_size;
        let attention = vb.pp("attention");
        let own = attention.pp("self");
        let scale = 1.0 / ((h / c.num_attention_heads) as f64).sqrt();
        let (qw, qb) = dense(own.pp("query"), h, h)?;
        let (kw, kb) = dense(own.pp("key"), h, h)?;
        let (vw, vb_) = dense(own.pp("value"), h, h)?;
        let qkv = Linear::new(
            Tensor::cat(&[&(qw * scale)?, &kw, &vw], 0)?,
            Some(Tensor::cat(&[&(qb * scale)?, &kb, &vb_], 0)?),
        );
        Ok(Layer {
            qkv,
            attention_output: linear(attention.pp("output").pp("dense"), h, h)?,
            attention_norm: LayerNorm::load(
                attention.pp("output").pp("LayerNorm"),
                h,
                c.layer_norm_eps,
            )?,
            intermediate: linear(vb.pp("intermediate").pp("dense"), h, c.intermediate_size)?,
            output: linear(vb.pp("output").pp("dense"), c.intermediate_size, h)?,
            output_norm: LayerNorm::load(vb.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
        })
    }
}

/// A loaded BERT encoder.
pub struct BertEncoder {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    activation: Activation,
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
        if c.num_attention_heads == 0 || c.hidden_size % c.num_attention_heads != 0 {
            candle_core::bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                c.hidden_size,
                c.num_attention_heads
            );
        }
        let h = c.hidden_size;
        let e = vb.pp("embeddings");
        let table = |name: &str, rows: usize| -> Result<Embedding> {
            Ok(Embedding::new(e.pp(name).get((rows, h), "weight")?, h))
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
            heads: c.num_attention_heads,
            activation: c.hidden_act,
        })
    }

    /// Token vectors `(batch, length, hidden)` for `ids`, `types` and `mask` (all
    /// `(batch, length)`, `u32`; mask 1 for real tokens, 0 for padding).
    pub fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, len) = ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, ids.device())?;
        let x = self
            .word
            .forward(ids)?
            .broadcast_add(&self.position.forward(&positions)?)?
            .add(&self.token_type.forward(types)?)?;
        let hidden = x.dim(D::Minus1)?;
        let mut x = self
            .embedding_norm
            .forward(&x)?
            .reshape((batch * len, hidden))?;
        // 0 where attention may look, a large negative number on padding.
        let blocked = ((1.0 - mask.to_dtype(DType::F32)?)? * -1e30)?.reshape((batch, 1, 1, len))?;
        let head_dim = hidden / self.heads;
        for layer in &self.layers {
            let qkv = layer
                .qkv
                .forward(&x)?
                .reshape((batch, len, 3, self.heads, head_dim))?;
            let part = |i: usize| {
                qkv.narrow(2, i, 1)?
                    .squeeze(2)?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, k, v) = (part(0)?, part(1)?, part(2)?); // (batch, heads, len, head_dim)
            let scores = q.matmul(&k.t()?)?.broadcast_add(&blocked)?;
            let context = candle_nn::ops::softmax_last_dim(&scores)?
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((batch * len, hidden))?;
            let attended = layer
                .attention_norm
                .forward(&layer.attention_output.forward(&context)?.add(&x)?)?;
            let inner = layer.intermediate.forward(&attended)?;
            let inner = match self.activation {
                Activation::Gelu => inner.gelu_erf()?,
                Activation::GeluApproximate => inner.gelu()?,
                Activation::Relu => inner.relu()?,
            };
            x = layer
                .output_norm
                .forward(&layer.output.forward(&inner)?.add(&attended)?)?;
        }
        x.reshape((batch, len, hidden))
    }
}
