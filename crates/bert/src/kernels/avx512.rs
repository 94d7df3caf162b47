//! The fused kernels with AVX-512F intrinsics: 16 `f32` lanes, the tail of a row through masked
//! loads and stores (no scalar loop), fused multiply-adds, and the same `exp`/`erf`
//! approximations as the portable code (`2^n` by `vscalefps`). Every function requires a CPU
//! with AVX-512F; the dispatcher in `kernels.rs` calls them only then.

use super::{Act, Norm};
use std::arch::x86_64::*;

/// Lanes of one register.
const LANES: usize = 16;

/// The blocks of [`LANES`] values covering `0..len`: start and lane mask (all lanes but in the
/// last, partial block).
fn blocks(len: usize) -> impl Iterator<Item = (usize, __mmask16)> {
    (0..len).step_by(LANES).map(move |at| {
        let left = len - at;
        let mask = if left >= LANES {
            u16::MAX
        } else {
            (1u16 << left) - 1
        };
        (at, mask)
    })
}

/// Lanes of `values[at..]` that `mask` selects, zero elsewhere.
///
/// # Safety
/// The selected lanes lie in `values`: `at + 16 <= values.len()`, or the mask selects only the
/// `values.len() - at` first lanes ([`blocks`] of a length ≤ `values.len()` give such pairs).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load(values: &[f32], at: usize, mask: __mmask16) -> __m512 {
    debug_assert!(at + (16 - mask.leading_zeros() as usize) <= values.len());
    _mm512_maskz_loadu_ps(mask, values.as_ptr().add(at))
}

/// Stores the lanes of `v` that `mask` selects into `values[at..]`.
///
/// # Safety
/// As for [`load`].
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store(values: &mut [f32], at: usize, mask: __mmask16, v: __m512) {
    debug_assert!(at + (16 - mask.leading_zeros() as usize) <= values.len());
    _mm512_mask_storeu_ps(values.as_mut_ptr().add(at), mask, v)
}

#[inline]
#[target_feature(enable = "avx512f")]
fn splat(v: f32) -> __m512 {
    _mm512_set1_ps(v)
}

/// `e^x`, as `kernels::exp` (same range reduction and polynomial, with fused multiply-adds).
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn exp(x: __m512) -> __m512 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = _mm512_min_ps(_mm512_max_ps(x, splat(-87.0)), splat(88.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, splat(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, splat(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, splat(LN2_LO), r);
    let mut p = splat(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, r, splat(c));
    }
    _mm512_scalef_ps(p, n)
}

/// The error function, as `kernels::erf` (Abramowitz & Stegun 7.1.26).
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn erf(x: __m512) -> __m512 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_72,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let one = splat(1.0);
    let z = _mm512_abs_ps(x);
    let t = _mm512_div_ps(one, _mm512_fmadd_ps(splat(P), z, one));
    let mut poly = splat(A[4]);
    for &a in A[..4].iter().rev() {
        poly = _mm512_fmadd_ps(poly, t, splat(a));
    }
    poly = _mm512_mul_ps(poly, t);
    let tail = exp(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(z, z)));
    let magnitude = _mm512_abs_ps(_mm512_fnmadd_ps(poly, tail, one));
    // copysign(magnitude, x)
    let sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN));
    _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(magnitude), sign))
}

/// `act(x)`.
#[inline]
#[target_feature(enable = "avx512f")]
fn activate(x: __m512, act: Act) -> __m512 {
    match act {
        Act::GeluErf => {
            let half_x = _mm512_mul_ps(splat(0.5), x);
            let e = erf(_mm512_mul_ps(x, splat(std::f32::consts::FRAC_1_SQRT_2)));
            _mm512_fmadd_ps(half_x, e, half_x)
        }
        Act::GeluTanh => {
            // ½x(1 + tanh u) = x / (1 + e^(−2u)), u = √(2/π)(x + 0.044715x³).
            let x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
            let u = _mm512_mul_ps(splat(0.797_884_6), _mm512_fmadd_ps(splat(0.044_715), x3, x));
            let e = exp(_mm512_mul_ps(splat(-2.0), u));
            _mm512_div_ps(x, _mm512_add_ps(splat(1.0), e))
        }
        Act::Relu => _mm512_max_ps(x, _mm512_setzero_ps()),
    }
}

/// `rows ← act(rows + bias)`, row by row.
#[target_feature(enable = "avx512f")]
pub(super) fn bias_activation_rows(rows: &mut [f32], bias: &[f32], act: Act) {
    let width = bias.len();
    for row in rows.chunks_exact_mut(width) {
        for (at, mask) in blocks(width) {
            // SAFETY: `row` and `bias` are `width` long.
            unsafe {
                let x = _mm512_add_ps(load(row, at, mask), load(bias, at, mask));
                store(row, at, mask, activate(x, act));
            }
        }
    }
}

/// `rows ← rows + bias`, row by row.
#[target_feature(enable = "avx512f")]
pub(super) fn add_bias_rows(rows: &mut [f32], bias: &[f32]) {
    let width = bias.len();
    for row in rows.chunks_exact_mut(width) {
        for (at, mask) in blocks(width) {
            // SAFETY: `row` and `bias` are `width` long.
            unsafe {
                let x = _mm512_add_ps(load(row, at, mask), load(bias, at, mask));
                store(row, at, mask, x);
            }
        }
    }
}

/// Normalises `row` whose values sum to `sum`: mean 0, variance 1, then scale and shift.
#[inline]
#[target_feature(enable = "avx512f")]
fn normalize(row: &mut [f32], sum: f32, norm: &Norm) {
    let width = row.len();
    assert!(norm.weight.len() == width && norm.bias.len() == width);
    let n = width as f32;
    let mean = splat(sum / n);
    let mut squares = _mm512_setzero_ps();
    for (at, mask) in blocks(width) {
        // SAFETY: `row` is `width` long.
        let d = _mm512_maskz_sub_ps(mask, unsafe { load(row, at, mask) }, mean);
        squares = _mm512_fmadd_ps(d, d, squares);
    }
    let scale = splat(1.0 / (_mm512_reduce_add_ps(squares) / n + norm.eps).sqrt());
    for (at, mask) in blocks(width) {
        // SAFETY: `row`, `norm.weight` and `norm.bias` are `width` long (asserted).
        unsafe {
            let d = _mm512_mul_ps(_mm512_sub_ps(load(row, at, mask), mean), scale);
            let v = _mm512_fmadd_ps(d, load(norm.weight, at, mask), load(norm.bias, at, mask));
            store(row, at, mask, v);
        }
    }
}

/// Layer norm of every row of `rows` (rows of `norm.weight.len()` values).
#[target_feature(enable = "avx512f")]
pub(super) fn norm_rows(rows: &mut [f32], norm: &Norm) {
    let width = norm.weight.len();
    for row in rows.chunks_exact_mut(width) {
        let mut sum = _mm512_setzero_ps();
        for (at, mask) in blocks(width) {
            // SAFETY: `row` is `width` long.
            sum = _mm512_add_ps(sum, unsafe { load(row, at, mask) });
        }
        normalize(row, _mm512_reduce_add_ps(sum), norm);
    }
}

/// `rows ← norm(rows + bias + residual)`, row by row; `residual` is as long as `rows`.
#[target_feature(enable = "avx512f")]
pub(super) fn bias_residual_norm_rows(
    rows: &mut [f32],
    bias: &[f32],
    residual: &[f32],
    norm: &Norm,
) {
    let width = bias.len();
    assert_eq!(rows.len(), residual.len());
    for (row, r_row) in rows
        .chunks_exact_mut(width)
        .zip(residual.chunks_exact(width))
    {
        let mut sum = _mm512_setzero_ps();
        for (at, mask) in blocks(width) {
            // SAFETY: `row`, `bias` and `r_row` are `width` long.
            unsafe {
                let x = _mm512_add_ps(load(row, at, mask), load(bias, at, mask));
                let x = _mm512_add_ps(x, load(r_row, at, mask));
                store(row, at, mask, x);
                sum = _mm512_add_ps(sum, x);
            }
        }
        normalize(row, _mm512_reduce_add_ps(sum), norm);
    }
}

/// Softmax of every row of `scores` (rows of `width` values), in place.
#[target_feature(enable = "avx512f")]
pub(super) fn softmax(scores: &mut [f32], width: usize) {
    for row in scores.chunks_exact_mut(width) {
        let mut top = splat(f32::NEG_INFINITY);
        for (at, mask) in blocks(width) {
            // SAFETY: `row` is `width` long.
            top = _mm512_mask_max_ps(top, mask, top, unsafe { load(row, at, mask) });
        }
        let top = splat(_mm512_reduce_max_ps(top));
        let mut sum = _mm512_setzero_ps();
        for (at, mask) in blocks(width) {
            // SAFETY: as above.
            unsafe {
                let e = exp(_mm512_sub_ps(load(row, at, mask), top));
                store(row, at, mask, e);
                sum = _mm512_mask_add_ps(sum, mask, sum, e);
            }
        }
        let scale = splat(1.0 / _mm512_reduce_add_ps(sum));
        for (at, mask) in blocks(width) {
            // SAFETY: as above.
            unsafe { store(row, at, mask, _mm512_mul_ps(load(row, at, mask), scale)) }
        }
    }
}

/// `values ← f(values)`, 16 at a time (for the tests of [`exp`] and [`erf`]).
#[cfg(test)]
#[target_feature(enable = "avx512f")]
pub(super) fn map(values: &mut [f32], f: impl Fn(__m512) -> __m512) {
    for (at, mask) in blocks(values.len()) {
        // SAFETY: `blocks` of `values.len()`.
        unsafe { store(values, at, mask, f(load(values, at, mask))) }
    }
}
