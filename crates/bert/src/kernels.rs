//! CPU kernels of the BERT encoder, on plain `f32` slices.
//!
//! Every element-wise step of a layer is fused into one parallel pass over rows (rayon): bias
//! and activation, bias and residual and layer norm, bias of the stacked query/key/value
//! projection. Matrix products go to the `gemm` crate (what candle uses on CPU, with runtime
//! AVX2/FMA/AVX-512 dispatch); the kernels here are compiled twice, for the x86-64 baseline and
//! for AVX2, and pick one at run time, since a default build targets the baseline (4-wide SSE2).
//!
//! Reductions (sums, maxima) run over 8 independent lanes, which the compiler can vectorise; the
//! order of additions therefore differs from a sequential sum by rounding only.

use rayon::prelude::*;

/// Rows handed to one rayon task: large enough to amortise scheduling.
const ROWS_PER_TASK: usize = 16;

/// Lanes of the vectorisable reductions (one AVX2 register of `f32`).
const LANES: usize = 8;

/// Defines `fn $name` that runs `$body` compiled for AVX2 when the CPU has it (checked once and
/// cached by the standard library), and for the baseline otherwise.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    generic($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
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
pub fn bias_activation(x: &mut [f32], bias: &[f32], act: Act) {
    for_rows(x, bias.len(), |rows, _| {
        bias_activation_rows(rows, bias, act)
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
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for_rows(x, bias.len(), |rows, _| add_bias_rows(rows, bias));
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

multiversion! {
    /// Normalises one row in place (mean 0, variance 1, then scale and shift).
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
}

multiversion! {
    fn add_bias_residual_rows(rows: &mut [f32], bias: &[f32], residual: &[f32]) {
        for (row, r_row) in rows.chunks_exact_mut(bias.len()).zip(residual.chunks_exact(bias.len())) {
            for ((v, &b), &r) in row.iter_mut().zip(bias).zip(r_row) {
                *v += b + r;
            }
        }
    }
}

/// `x ← norm(x + bias + residual)`, row by row (`x` and `residual` are `(rows, bias.len())`).
pub fn bias_residual_norm(x: &mut [f32], bias: &[f32], residual: &[f32], norm: &Norm) {
    let width = bias.len();
    assert_eq!(x.len(), residual.len(), "bias-residual-norm: shapes differ");
    for_rows(x, width, |rows, first| {
        let start = first * width;
        add_bias_residual_rows(rows, bias, &residual[start..start + rows.len()]);
        for row in rows.chunks_exact_mut(width) {
            norm_row(row, norm);
        }
    });
}

/// Layer norm of every row of `x` (`(rows, norm.weight.len())`), in place.
pub fn layer_norm(x: &mut [f32], norm: &Norm) {
    for_rows(x, norm.weight.len(), |rows, _| {
        for row in rows.chunks_exact_mut(norm.weight.len()) {
            norm_row(row, norm);
        }
    });
}

multiversion! {
    /// Softmax of every row of `scores` (`(rows, width)`), in place.
    pub fn softmax_rows(scores: &mut [f32], width: usize) {
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
/// `dst_row_stride` apart (columns contiguous). `parallel` spreads the product over rayon's
/// threads; a product inside a parallel loop runs on its own thread.
///
/// # Panics
/// If the shapes do not agree or a view reaches past its slice.
pub fn matmul(dst: &mut [f32], dst_row_stride: usize, lhs: Matrix, rhs: Matrix, parallel: bool) {
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
    // SAFETY: every index the product touches was bounds-checked above; `dst` is exclusively
    // borrowed and does not overlap the shared operands.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_row_stride as isize,
            false,
            lhs.data.as_ptr(),
            lhs.column_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.column_stride as isize,
            rhs.row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ten_millionths_relative_of_std() {
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let (fast, exact) = (exp(x), x.exp());
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
            let (fast, exact) = (erf(x), libm::erff(x));
            assert!((fast - exact).abs() < 5e-7, "erf({x}): {fast} vs {exact}");
        }
    }

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matmul_matches_a_naive_product_for_strided_and_transposed_views() {
        let (m, k, n) = (37, 19, 23);
        let a = values(m * k, 1);
        // b stored transposed: (n, k), viewed as (k, n).
        let b = values(n * k, 2);
        let lhs = Matrix {
            data: &a,
            rows: m,
            columns: k,
            row_stride: k,
            column_stride: 1,
        };
        let rhs = Matrix {
            data: &b,
            rows: n,
            columns: k,
            row_stride: k,
            column_stride: 1,
        }
        .t();
        let stride = n + 5;
        let mut dst = vec![f32::NAN; m * stride];
        matmul(&mut dst, stride, lhs, rhs, true);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum();
                let got = dst[i * stride + j];
                assert!((got - want).abs() < 1e-5, "({i}, {j}): {got} vs {want}");
            }
            // Columns past n are left alone.
            assert!(dst[i * stride + n].is_nan());
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_keep_order() {
        let mut scores = values(3 * 13, 3);
        scores[5] = 30.0;
        let before = scores.clone();
        softmax_rows(&mut scores, 13);
        for (row, old) in scores.chunks(13).zip(before.chunks(13)) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            let denominator: f64 = old.iter().map(|&v| (v as f64).exp()).sum();
            for (&p, &v) in row.iter().zip(old) {
                assert!((p as f64 - (v as f64).exp() / denominator).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn bias_residual_norm_matches_the_textbook_formula() {
        let width = 21;
        let rows = 40; // more than one rayon task
        let x0 = values(rows * width, 4);
        let residual = values(rows * width, 5);
        let bias = values(width, 6);
        let weight = values(width, 7);
        let shift = values(width, 8);
        let norm = Norm {
            weight: &weight,
            bias: &shift,
            eps: 1e-12,
        };
        let mut x = x0.clone();
        bias_residual_norm(&mut x, &bias, &residual, &norm);
        for r in 0..rows {
            let v: Vec<f64> = (0..width)
                .map(|c| (x0[r * width + c] + bias[c] + residual[r * width + c]) as f64)
                .collect();
            let mean = v.iter().sum::<f64>() / width as f64;
            let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / width as f64;
            for c in 0..width {
                let want =
                    (v[c] - mean) / (var + 1e-12).sqrt() * weight[c] as f64 + shift[c] as f64;
                let got = x[r * width + c] as f64;
                assert!(
                    (got - want).abs() < 1e-5,
                    "row {r} column {c}: {got} vs {want}"
                );
            }
        }
    }
}
