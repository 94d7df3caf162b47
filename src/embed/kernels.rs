//! Fused CPU kernels for the BERT encoder, as candle custom ops.
//!
//! candle runs element-wise tensor operations (bias adds, residual adds, masks, GELU) one at a
//! time and on one thread; on a 2-core machine that left half the time of a forward pass on one
//! core. Each kernel here does in one parallel pass (rayon) what took two or three passes.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape};
use rayon::prelude::*;

/// Rows handed to one rayon task: large enough to amortise scheduling.
const ROWS_PER_TASK: usize = 16;

fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        bail!("{what}: f32 input expected")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{what}: contiguous input expected"),
    }
}

/// The error function, Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7 in exact arithmetic, 3e-7 in f32: under f32's
/// resolution near 1): branch-free, so the compiler vectorises the loops that call it, unlike
/// libm's `erff`, which took a tenth of a forward pass.
#[inline]
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_72,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let z = x.abs();
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    (1.0 - poly * exp(-z * z)).copysign(x)
}

/// `e^x` for the kernels: Cody–Waite range reduction and a degree-7 polynomial (relative error
/// about 1e-7), branch-free so that the loops calling it vectorise; libm's `expf` is a call per
/// value. Inputs below -87 give ~0, as the kernels need (softmax of masked-out scores, erf tails).
#[inline]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Rounds to the nearest integer with plain adds (1.5 · 2²³), which vectorise everywhere.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Feed-forward activation applied after the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// GELU with the exact error function.
    GeluErf,
    /// GELU's tanh approximation.
    GeluTanh,
    /// max(0, x).
    Relu,
}

/// `act(x + bias)` over rows of `x` (`(rows, bias.len())`).
pub struct BiasActivation<'a> {
    /// One value per column.
    pub bias: &'a [f32],
    /// The activation.
    pub act: Act,
}

impl CustomOp1 for BiasActivation<'_> {
    fn name(&self) -> &'static str {
        "bias-activation"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(storage, layout, self.name())?;
        let width = self.bias.len();
        if width == 0 || x.len() % width != 0 {
            bail!("bias-activation: {} values for a bias of {width}", x.len())
        }
        let mut out = vec![0f32; x.len()];
        let act = self.act;
        out.par_chunks_mut(width * ROWS_PER_TASK)
            .zip(x.par_chunks(width * ROWS_PER_TASK))
            .for_each(|(out, x)| {
                for (o_row, x_row) in out.chunks_mut(width).zip(x.chunks(width)) {
                    for ((o, &v), &b) in o_row.iter_mut().zip(x_row).zip(self.bias) {
                        let v = v + b;
                        *o = match act {
                            Act::GeluErf => {
                                0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2))
                            }
                            Act::GeluTanh => {
                                let inner = 0.797_884_6 * (v + 0.044_715 * v * v * v);
                                0.5 * v * (1.0 + inner.tanh())
                            }
                            Act::Relu => v.max(0.0),
                        };
                    }
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// `x + bias + residual` over rows (both `(rows, bias.len())`).
pub struct BiasResidual<'a> {
    /// One value per column.
    pub bias: &'a [f32],
}

impl CustomOp2 for BiasResidual<'_> {
    fn name(&self) -> &'static str {
        "bias-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(s1, l1, self.name())?;
        let residual = contiguous(s2, l2, self.name())?;
        let width = self.bias.len();
        if width == 0 || x.len() != residual.len() || x.len() % width != 0 {
            bail!(
                "bias-residual: shapes {:?} and {:?}",
                l1.shape(),
                l2.shape()
            )
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(width * ROWS_PER_TASK)
            .zip(x.par_chunks(width * ROWS_PER_TASK))
            .zip(residual.par_chunks(width * ROWS_PER_TASK))
            .for_each(|((out, x), r)| {
                for ((o_row, x_row), r_row) in out
                    .chunks_mut(width)
                    .zip(x.chunks(width))
                    .zip(r.chunks(width))
                {
                    for (((o, &v), &b), &r) in o_row.iter_mut().zip(x_row).zip(self.bias).zip(r_row)
                    {
                        *o = v + b + r;
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Adds the bias to the stacked query/key/value projection `(batch·len, 3·heads·head_dim)` and
/// lays it out as `(3, batch, heads, len, head_dim)`, ready for per-head matrix products.
pub struct SplitHeads<'a> {
    /// Bias of the stacked projection.
    pub bias: &'a [f32],
    /// Texts in the batch.
    pub batch: usize,
    /// Tokens per text.
    pub len: usize,
    /// Attention heads.
    pub heads: usize,
}

impl CustomOp1 for SplitHeads<'_> {
    fn name(&self) -> &'static str {
        "split-heads"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(storage, layout, self.name())?;
        let (batch, len, heads) = (self.batch, self.len, self.heads);
        let width = self.bias.len();
        if heads == 0 || width % (3 * heads) != 0 || x.len() != batch * len * width {
            bail!("split-heads: shape {:?}", layout.shape())
        }
        let head_dim = width / (3 * heads);
        let mut out = vec![0f32; x.len()];
        // One task per (part, text, head) block of `len × head_dim` values.
        out.par_chunks_mut(len * head_dim)
            .enumerate()
            .for_each(|(block, dst)| {
                let head = block % heads;
                let text = (block / heads) % batch;
                let part = block / (heads * batch);
                let column = part * heads * head_dim + head * head_dim;
                let bias = &self.bias[column..column + head_dim];
                for (t, dst_row) in dst.chunks_mut(head_dim).enumerate() {
                    let row = (text * len + t) * width + column;
                    for ((d, &v), &b) in dst_row.iter_mut().zip(&x[row..row + head_dim]).zip(bias) {
                        *d = v + b;
                    }
                }
            });
        Ok((
            CpuStorage::F32(out),
            Shape::from_dims(&[3, batch, heads, len, head_dim]),
        ))
    }
}

/// Softmax over the last dimension of attention scores `(batch, heads, len, len)`, where text
/// `b` attends only to its first `lengths[b]` tokens (the rest is padding and gets 0).
pub struct MaskedSoftmax<'a> {
    /// Real tokens per text.
    pub lengths: &'a [usize],
}

impl CustomOp1 for MaskedSoftmax<'_> {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(storage, layout, self.name())?;
        let dims = layout.shape().dims();
        let [batch, heads, len, keys] = *dims else {
            bail!("masked-softmax: 4 dimensions expected, got {dims:?}")
        };
        if batch != self.lengths.len() || len != keys {
            bail!(
                "masked-softmax: shape {dims:?} for {} texts",
                self.lengths.len()
            )
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(keys * len)
            .zip(x.par_chunks(keys * len))
            .enumerate()
            .for_each(|(block, (out, x))| {
                let valid = self.lengths[block / heads].clamp(1, keys);
                for (o_row, x_row) in out.chunks_mut(keys).zip(x.chunks(keys)) {
                    let (o_row, x_row) = (&mut o_row[..valid], &x_row[..valid]);
                    let max = x_row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0;
                    for (o, &v) in o_row.iter_mut().zip(x_row) {
                        *o = exp(v - max);
                    }
                    for &o in o_row.iter() {
                        sum += o;
                    }
                    let scale = 1.0 / sum;
                    o_row.iter_mut().for_each(|o| *o *= scale);
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_within_two_ten_millionths_relative_of_std() {
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let (fast, exact) = (super::exp(x), x.exp());
            assert!(
                ((fast - exact) / exact).abs() < 2e-7,
                "exp({x}): {fast} vs {exact}"
            );
        }
    }

    #[test]
    fn erf_is_within_half_a_millionth_of_libm() {
        for i in -8000..=8000 {
            let x = i as f32 / 1000.0;
            let (fast, exact) = (super::erf(x), libm::erff(x));
            assert!((fast - exact).abs() < 5e-7, "erf({x}): {fast} vs {exact}");
        }
    }
}
