//! A BERT encoder forward pass for CPU inference, on candle tensors.
//!
//! The same arithmetic as Hugging Face's `BertModel` (absolute positions, post-layer-norm), laid
//! out for speed on a CPU: the query, key and value projections are one matrix product (the
//! 1/√head_dim scale folded into the query weights at load), the attention mask becomes one
//! additive tensor per batch, softmax is candle's fused last-dimension kernel, and every dense
//! layer is a single 2-D product over all tokens of the batch.

use super::kernels::{Act, BiasActivation, BiasResidual, MaskedSoftmax, SplitHeads};
use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Embedding, VarBuilder};
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

/// A dense layer whose bias is applied by a fused kernel.
struct Dense {
    /// `(output, input)`.
    weight: Tensor,
    bias: Vec<f32>,
}

impl Dense {
    fn load(vb: VarBuilder, input: usize, output: usize) -> Result<Self> {
        let (weight, bias) = dense(vb, input, output)?;
        Ok(Dense {
            weight,
            bias: bias.to_vec1()?,
        })
    }

    /// `x · weightᵀ` for `x` of `(rows, input)`, without the bias.
    fn product(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight.t()?)
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
        let (qw, qb) = dense(own.pp("query"), h, h)?;
        let (kw, kb) = dense(own.pp("key"), h, h)?;
        let (vw, vb_) = dense(own.pp("value"), h, h)?;
        let qkv = Dense {
            weight: Tensor::cat(&[&(qw * scale)?, &kw, &vw], 0)?,
            bias: Tensor::cat(&[&(qb * scale)?, &kb, &vb_], 0)?.to_vec1()?,
        };
        Ok(Layer {
            qkv,
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

/// A loaded BERT encoder.
pub struct BertEncoder {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    activation: Act,
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
            activation: match c.hidden_act {
                Activation::Gelu => Act::GeluErf,
                Activation::GeluApproximate => Act::GeluTanh,
                Activation::Relu => Act::Relu,
            },
        })
    }

    /// Token vectors `(batch, length, hidden)` for `ids` and `types` (both `(batch, length)`,
    /// `u32`), where text `b` has `lengths[b]` real tokens followed by padding.
    pub fn forward(&self, ids: &Tensor, types: &Tensor, lengths: &[usize]) -> Result<Tensor> {
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
        let softmax = MaskedSoftmax { lengths };
        for layer in &self.layers {
            let split = SplitHeads {
                bias: &layer.qkv.bias,
                batch,
                len,
                heads: self.heads,
            };
            // (3, batch, heads, len, head_dim): query, key, value.
            let qkv = layer.qkv.product(&x)?.apply_op1_no_bwd(&split)?;
            let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
            let context = q
                .matmul(&k.t()?)?
                .apply_op1_no_bwd(&softmax)?
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((batch * len, hidden))?;
            let attended = layer.attention_norm.forward(
                &layer.attention_output.product(&context)?.apply_op2_no_bwd(
                    &x,
                    &BiasResidual {
                        bias: &layer.attention_output.bias,
                    },
                )?,
            )?;
            let inner =
                layer
                    .intermediate
                    .product(&attended)?
                    .apply_op1_no_bwd(&BiasActivation {
                        bias: &layer.intermediate.bias,
                        act: self.activation,
                    })?;
            x = layer
                .output_norm
                .forward(&layer.output.product(&inner)?.apply_op2_no_bwd(
                    &attended,
                    &BiasResidual {
                        bias: &layer.output.bias,
                    },
                )?)?;
        }
        x.reshape((batch, len, hidden))
    }
}
