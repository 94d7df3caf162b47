//! CPU kernels of the BERT encoder, on plain `f32` slices.
//!
//! Every element-wise step of a layer is fused into one parallel pass over rows (rayon): bias
//! and activation, bias and residual and layer norm, bias of the stacked query/key/value
//! projection. Matrix products go to the `gemm` crate (what candle uses on CPU).
//!
//! Each kernel takes the [`Level`] to run at (clamped to what the CPU has, so any value is
//! safe): `Baseline` is the plain Rust below compiled for the target's baseline (4-wide SSE2 on
//! x86-64), `Avx2` the same code compiled with AVX2 and FMA enabled, `Avx512` hand-written
//! AVX-512F intrinsics (`avx512.rs`); [`matmul`] runs gemm's micro-kernels of that level.
//!
//! Reductions (sums, maxima) run over independent lanes (8 here, 16 in `avx512.rs`), which the
//! compiler can vectorise; the order of additions therefore differs from a sequential sum, and
//! from level to level, by rounding only.

use crate::Level;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(test)]
mod tests;

/// Rows handed to one rayon task: large enough to amortise scheduling.
const ROWS_PER_TASK: usize = 16;

/// Lanes of the vectorisable reductions (one AVX2 register of `f32`).
const LANES: usize = 8;

/// Defines `fn $name(level, …)` that runs `$body` compiled for AVX2 and FMA at `Level::Avx2`,
/// `avx512::$name` at `Level::Avx512`, and `$body` for the baseline otherwise — each only when
/// the CPU has it ([`Level::clamped`]).
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name(level: Level, $($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            match level.clamped() {
                #[cfg(target_arch = "x86_64")]
                Level::Avx512 => {
                    // SAFETY: the CPU supports AVX-512F (`clamped`).
                    unsafe { avx512::$name($($arg),*) }
                }
                #[cfg(target_arch = "x86_64")]
                Level::Avx2 => {
                    #[target_feature(enable = "avx2,fma")]
                    fn avx2($($arg: $ty),*) {
                        generic($($arg),*)
                    }
                    // SAFETY: the CPU supports AVX2 and FMA (`clamped`).
                    unsafe { avx2($($arg),*) }
                }
                _ => generic($($arg),*),
            }
        }
    };
}

/// The error function, Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7 in exact
/// arithmetic, 3e-7 in f32: under f32's resolution near 1): branch-free, so the compiler
/// vectorises the loops that call it, unlike libm's `erff`.
#[inline(always)]
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

/// `e^x`: Cody–Waite range reduction and a degree-7 polynomial (relative error about 1e-7),
/// branch-free so that the loops calling it vectorise; libm's `expf` is a call per value.
/// Inputs below -87 give ~0, as the kernels need (softmax tails, erf tails).
#[inline(always)]
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

/// Sum of `f(v)` over `values`, in [`LANES`] partial sums.
#[inline(always)]
fn sum_of(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().map(|&v| f(v)).sum::<f32>()
}

/// Largest of `values` (`-inf` for none), over [`LANES`] partial maxima.
#[inline(always)]
fn max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
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

/// Runs `kernel` on blocks of whole rows of `width` values, in parallel.
fn for_rows(x: &mut [f32], width: usize, kernel: impl Fn(&mut [f32], usize) + Sync) {
    assert!(
        width > 0 && x.len().is_multiple_of(width),
        "rows of {width} values"
    );
    x.par_chunks_mut(width * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, rows)| kernel(rows, task * ROWS_PER_TASK));
}

multiversion! {
    fn bias_activation_rows(rows: &mut [f32], bias: &[f32], act: Act) {
        for row in rows.chunks_exact_mut(bias.len()) {
            for (v, &b) in row.iter_mut().zip(bias) {
                let x = *v + b;
                *v = match act {
                    Act::GeluErf => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
                    Act::GeluTanh => {
                        let inner = 0.797_884_6 * (x + 0.044_715 * x * x * x);
                        0.5 * x * (1.0 + inner.tanh())
                    }
                    Act::Relu => x.max(0.0),
                };
            }
        }
    }
}

/// `x ← act(x + bias)`, row by row (`x` is `(rows, bias.len())`).
pub fn bias_activation(level: Level, x: &mut [f32], bias: &[f32], act: Act) {
    for_rows(x, bias.len(), |rows, _| {
        bias_activation_rows(level, rows, bias, act)
    });
}

multiversion! {
    fn add_bias_rows(rows: &mut [f32], bias: &[f32]) {
        for row in rows.chunks_exact_mut(bias.len()) {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
}

/// `x ← x + bias`, row by row (`x` is `(rows, bias.len())`).
pub fn add_bias(level: Level, x: &mut [f32], bias: &[f32]) {
    for_rows(x, bias.len(), |rows, _| add_bias_rows(level, rows, bias));
}

/// Weights of a layer norm over rows.
pub struct Norm<'a> {
    /// Scale, one per column.
    pub weight: &'a [f32],
    /// Shift, one per column.
    pub bias: &'a [f32],
    /// Added to the variance.
    pub eps: f32,
}

impl Norm<'_> {
    /// Checks that the weights are `width` long (the kernels rely on it).
    fn check(&self, width: usize) {
        assert!(
            self.weight.len() == width && self.bias.len() == width,
            "layer norm: {} weights and {} biases for rows of {width}",
            self.weight.len(),
            self.bias.len()
        );
    }
}

/// Normalises one row in place (mean 0, variance 1, then scale and shift).
#[inline(always)]
fn norm_row(row: &mut [f32], norm: &Norm) {
    let n = row.len() as f32;
    let mean = sum_of(row, |v| v) / n;
    for v in row.iter_mut() {
        *v -= mean;
    }
    let variance = sum_of(row, |v| v * v) / n;
    let scale = 1.0 / (variance + norm.eps).sqrt();
    for ((v, &w), &b) in row.iter_mut().zip(norm.weight).zip(norm.bias) {
        *v = *v * scale * w + b;
    }
}

multiversion! {
    fn norm_rows(rows: &mut [f32], norm: &Norm) {
        for row in rows.chunks_exact_mut(norm.weight.len()) {
            norm_row(row, norm);
        }
    }
}

multiversion! {
    fn bias_residual_norm_rows(rows: &mut [f32], bias: &[f32], residual: &[f32], norm: &Norm) {
        let width = bias.len();
        for (row, r_row) in rows.chunks_exact_mut(width).zip(residual.chunks_exact(width)) {
            for ((v, &b), &r) in row.iter_mut().zip(bias).zip(r_row) {
                *v += b + r;
            }
            norm_row(row, norm);
        }
    }
}

/// `x ← norm(x + bias + residual)`, row by row (`x` and `residual` are `(rows, bias.len())`).
pub fn bias_residual_norm(
    level: Level,
    x: &mut [f32],
    bias: &[f32],
    residual: &[f32],
    norm: &Norm,
) {
    let width = bias.len();
    assert_eq!(x.len(), residual.len(), "bias-residual-norm: shapes differ");
    norm.check(width);
    for_rows(x, width, |rows, first| {
        let start = first * width;
        let residual = &residual[start..start + rows.len()];
        bias_residual_norm_rows(level, rows, bias, residual, norm);
    });
}

/// Layer norm of every row of `x` (`(rows, norm.weight.len())`), in place.
pub fn layer_norm(level: Level, x: &mut [f32], norm: &Norm) {
    let width = norm.weight.len();
    norm.check(width);
    for_rows(x, width, |rows, _| norm_rows(level, rows, norm));
}

multiversion! {
    fn softmax(scores: &mut [f32], width: usize) {
        for row in scores.chunks_exact_mut(width) {
            let top = max(row);
            for v in row.iter_mut() {
                *v = exp(*v - top);
            }
            let scale = 1.0 / sum_of(row, |v| v);
            for v in row.iter_mut() {
                *v *= scale;
            }
        }
    }
}

/// Softmax of every row of `scores` (`(rows, width)`), in place.
pub fn softmax_rows(level: Level, scores: &mut [f32], width: usize) {
    assert!(
        width > 0 && scores.len().is_multiple_of(width),
        "rows of {width} values"
    );
    softmax(level, scores, width);
}

/// A matrix view into a slice: element `(i, j)` is `data[i · row_stride + j · column_stride]`.
#[derive(Clone, Copy)]
pub struct Matrix<'a> {
    /// The values.
    pub data: &'a [f32],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub columns: usize,
    /// Distance between rows.
    pub row_stride: usize,
    /// Distance between columns.
    pub column_stride: usize,
}

impl Matrix<'_> {
    /// Index of the last element, the view's extent in `data`.
    fn last_index(&self, rows: usize, columns: usize) -> usize {
        (rows - 1) * self.row_stride + (columns - 1) * self.column_stride
    }

    /// The transposed view.
    pub fn t(self) -> Self {
        Matrix {
            rows: self.columns,
            columns: self.rows,
            row_stride: self.column_stride,
            column_stride: self.row_stride,
            ..self
        }
    }
}

/// `dst ← lhs · rhs`, where `dst` holds `lhs.rows × rhs.columns` values with rows
/// `dst_row_stride` apart (columns contiguous), with gemm's micro-kernels of `level`.
/// `parallel` spreads the product over rayon's threads; a product inside a parallel loop runs on
/// its own thread.
///
/// # Panics
/// If the shapes do not agree or a view reaches past its slice.
pub fn matmul(
    level: Level,
    dst: &mut [f32],
    dst_row_stride: usize,
    lhs: Matrix,
    rhs: Matrix,
    parallel: bool,
) {
    let (m, k, n) = (lhs.rows, lhs.columns, rhs.columns);
    assert_eq!(k, rhs.rows, "matmul: inner dimensions differ");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        n <= dst_row_stride && (m - 1) * dst_row_stride + n <= dst.len(),
        "matmul: destination too small"
    );
    if k == 0 {
        for row in dst.chunks_mut(dst_row_stride).take(m) {
            row[..n].fill(0.0);
        }
        return;
    }
    assert!(
        lhs.last_index(m, k) < lhs.data.len() && rhs.last_index(k, n) < rhs.data.len(),
        "matmul: operand view out of bounds"
    );
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    let dst = dst.as_mut_ptr();
    let (lhs_data, rhs_data) = (lhs.data.as_ptr(), rhs.data.as_ptr());
    let (lhs_cs, lhs_rs) = (lhs.column_stride as isize, lhs.row_stride as isize);
    let (rhs_cs, rhs_rs) = (rhs.column_stride as isize, rhs.row_stride as isize);
    let dst_rs = dst_row_stride as isize;
    // `gemm::gemm` runs the micro-kernels of the best level the CPU has; this is the same call
    // (`gemm_f32`'s `gemm_basic`, `dst ← 0 · dst + 1 · lhs · rhs`) with those of `level`.
    #[cfg(target_arch = "x86_64")]
    macro_rules! product {
        ($simd:expr, $kernels:ident, $lanes:literal) => {{
            use gemm_f32::microkernel::$kernels::f32 as ukr;
            gemm_common::gemm::gemm_basic_generic::<
                _,
                f32,
                $lanes,
                { ukr::MR_DIV_N * $lanes },
                { ukr::NR },
                { ukr::MR_DIV_N },
                { ukr::H_M },
                { ukr::H_N },
            >(
                $simd,
                m,
                n,
                k,
                dst,
                1,
                dst_rs,
                false,
                lhs_data,
                lhs_cs,
                lhs_rs,
                rhs_data,
                rhs_cs,
                rhs_rs,
                0.0,
                1.0,
                false,
                false,
                false,
                |a, b, c| a * b + c,
                &ukr::UKR,
                &ukr::H_UKR,
                false,
                parallelism,
            )
        }};
    }
    // SAFETY: every index the product touches was bounds-checked above; `dst` is exclusively
    // borrowed and does not overlap the shared operands; a SIMD token exists only when the CPU
    // has its instructions.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        {
            use gemm_common::simd::{Scalar, V3, V4};
            let level = level.clamped();
            if level == Level::Avx512 {
                if let Some(simd) = V4::try_new() {
                    return product!(simd, avx512f, 16);
                }
            }
            if level >= Level::Avx2 {
                if let Some(simd) = V3::try_new() {
                    return product!(simd, fma, 8);
                }
            }
            product!(Scalar, scalar, 1)
        }
        // Elsewhere, gemm's own choice (NEON on aarch64): the levels are x86-64's.
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = level;
            gemm::gemm(
                m,
                n,
                k,
                dst,
                1,
                dst_rs,
                false,
                lhs_data,
                lhs_cs,
                lhs_rs,
                rhs_data,
                rhs_cs,
                rhs_rs,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            )
        }
    }
}
