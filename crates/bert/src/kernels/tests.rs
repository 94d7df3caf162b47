//! The kernels at every level this CPU supports (forced one by one, not only the best), against
//! the textbook formulas in f64 and against the baseline level's output, on row widths with and
//! without a tail (lengths that are not a multiple of 8 or 16). Each test prints the levels it
//! ran (`cargo test -- --nocapture`), so a log shows whether AVX-512 was checked.

use super::*;

/// Row widths: one value, below one register, exact registers, and odd tails around them.
const WIDTHS: [usize; 10] = [1, 3, 7, 8, 15, 16, 17, 31, 33, 100];

/// Rows per call: more than one rayon task (16 rows each), not a multiple of it.
const ROWS: usize = 37;

/// The levels this CPU runs, lowest first, printed.
fn levels(test: &str) -> Vec<Level> {
    let levels: Vec<Level> = Level::supported().collect();
    let names: Vec<&str> = levels.iter().map(|l| l.name()).collect();
    eprintln!("{test}: levels {}", names.join(", "));
    levels
}

/// Deterministic values in [-scale, scale).
fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            ((state as f32 / u32::MAX as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Asserts `|got − want| ≤ tolerance` everywhere, naming the kernel, level, width and index.
fn assert_close(what: &str, level: Level, width: usize, got: &[f32], want: &[f64], tolerance: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tolerance,
            "{what} at {level}, width {width}, value {i}: {g} vs {w} (tolerance {tolerance})"
        );
    }
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

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

/// GELU (exact erf, or tanh) and ReLU in f64.
fn activation(x: f64, act: Act) -> f64 {
    match act {
        Act::GeluErf => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        Act::GeluTanh => {
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044_715 * x * x * x);
            0.5 * x * (1.0 + inner.tanh())
        }
        Act::Relu => x.max(0.0),
    }
}

#[test]
fn bias_activation_matches_the_formula_at_every_level() {
    // |x| up to 8: erf's and exp's tails, and f32 rounding of x itself (8 · 6e-8), stay below.
    const TOLERANCE: f64 = 2e-6;
    for act in [Act::GeluErf, Act::GeluTanh, Act::Relu] {
        for width in WIDTHS {
            let x0 = values(ROWS * width, 11, 6.0);
            let bias = values(width, 12, 2.0);
            let want: Vec<f64> = x0
                .iter()
                .enumerate()
                .map(|(i, &v)| activation((v + bias[i % width]) as f64, act))
                .collect();
            let mut baseline = None;
            for level in levels(&format!("bias_activation {act:?} width {width}")) {
                let mut x = x0.clone();
                bias_activation(level, &mut x, &bias, act);
                assert_close("bias_activation", level, width, &x, &want, TOLERANCE);
                let base = baseline.get_or_insert_with(|| widen(&x));
                assert_close(
                    "bias_activation vs baseline",
                    level,
                    width,
                    &x,
                    base,
                    TOLERANCE,
                );
            }
        }
    }
}

#[test]
fn add_bias_is_exact_at_every_level() {
    for width in WIDTHS {
        let x0 = values(ROWS * width, 21, 1.0);
        let bias = values(width, 22, 1.0);
        let want: Vec<f32> = x0
            .iter()
            .enumerate()
            .map(|(i, &v)| v + bias[i % width])
            .collect();
        for level in levels(&format!("add_bias width {width}")) {
            let mut x = x0.clone();
            add_bias(level, &mut x, &bias);
            assert_eq!(x, want, "add_bias at {level}, width {width}");
        }
    }
}

/// `(v − mean) / √(variance + eps) · weight + shift` of every row, in f64.
fn textbook_norm(v: &[f64], width: usize, weight: &[f32], shift: &[f32], eps: f64) -> Vec<f64> {
    v.chunks(width)
        .flat_map(|row| {
            let mean = row.iter().sum::<f64>() / width as f64;
            let var = row.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / width as f64;
            row.iter()
                .zip(weight.iter().zip(shift))
                .map(move |(a, (&w, &s))| (a - mean) / (var + eps).sqrt() * w as f64 + s as f64)
        })
        .collect()
}

#[test]
fn bias_residual_norm_and_layer_norm_match_the_textbook_formula_at_every_level() {
    // Values of order 1 after the norm; f32 sums over up to 100 values.
    const TOLERANCE: f64 = 1e-5;
    for width in WIDTHS.into_iter().filter(|&w| w > 1) {
        let x0 = values(ROWS * width, 4, 1.0);
        let residual = values(ROWS * width, 5, 1.0);
        let bias = values(width, 6, 1.0);
        let weight = values(width, 7, 1.0);
        let shift = values(width, 8, 1.0);
        let norm = Norm {
            weight: &weight,
            bias: &shift,
            eps: 1e-12,
        };
        let sums: Vec<f64> = (0..x0.len())
            .map(|i| (x0[i] + bias[i % width] + residual[i]) as f64)
            .collect();
        let want_fused = textbook_norm(&sums, width, &weight, &shift, 1e-12);
        let want_plain = textbook_norm(&widen(&x0), width, &weight, &shift, 1e-12);
        let (mut fused_base, mut plain_base) = (None, None);
        for level in levels(&format!("bias_residual_norm, layer_norm width {width}")) {
            let mut x = x0.clone();
            bias_residual_norm(level, &mut x, &bias, &residual, &norm);
            assert_close(
                "bias_residual_norm",
                level,
                width,
                &x,
                &want_fused,
                TOLERANCE,
            );
            let base = fused_base.get_or_insert_with(|| widen(&x));
            assert_close(
                "bias_residual_norm vs baseline",
                level,
                width,
                &x,
                base,
                TOLERANCE,
            );

            let mut x = x0.clone();
            layer_norm(level, &mut x, &norm);
            assert_close("layer_norm", level, width, &x, &want_plain, TOLERANCE);
            let base = plain_base.get_or_insert_with(|| widen(&x));
            assert_close("layer_norm vs baseline", level, width, &x, base, TOLERANCE);
        }
    }
}

#[test]
fn softmax_matches_the_formula_at_every_level() {
    // Probabilities in [0, 1]; exp's relative error 2e-7 plus the rounding of the sum.
    const TOLERANCE: f64 = 1e-6;
    for width in WIDTHS {
        let mut scores0 = values(ROWS * width, 3, 8.0);
        // A dominant score (the max subtraction matters) and one far below (exp underflows).
        scores0[width / 2] = 60.0;
        scores0[width + width / 2] = -120.0;
        let want: Vec<f64> = scores0
            .chunks(width)
            .flat_map(|row| {
                let top = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                let total: f64 = row.iter().map(|&v| (v as f64 - top).exp()).sum();
                row.iter().map(move |&v| (v as f64 - top).exp() / total)
            })
            .collect();
        let mut baseline = None;
        for level in levels(&format!("softmax width {width}")) {
            let mut scores = scores0.clone();
            softmax_rows(level, &mut scores, width);
            assert_close("softmax", level, width, &scores, &want, TOLERANCE);
            for row in scores.chunks(width) {
                let total: f32 = row.iter().sum();
                assert!(
                    (total - 1.0).abs() < 1e-5,
                    "softmax at {level}: sum {total}"
                );
            }
            let base = baseline.get_or_insert_with(|| widen(&scores));
            assert_close(
                "softmax vs baseline",
                level,
                width,
                &scores,
                base,
                TOLERANCE,
            );
        }
    }
}

#[test]
fn matmul_matches_a_naive_product_at_every_level_for_strided_and_transposed_views() {
    // Shapes with tails for every micro-kernel size, and one large enough for gemm to pack and
    // split the work (1e-6 per term of the inner dimension covers f32 rounding).
    for (m, k, n) in [(37, 19, 23), (1, 5, 3), (130, 384, 67)] {
        let a = values(m * k, 1, 1.0);
        // b stored transposed: (n, k), viewed as (k, n).
        let b = values(n * k, 2, 1.0);
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
        let want: Vec<f64> = (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                (0..k)
                    .map(|p| a[i * k + p] as f64 * b[j * k + p] as f64)
                    .sum()
            })
            .collect();
        let tolerance = 1e-6 * k as f64;
        let mut baseline = None;
        for level in levels(&format!("matmul {m}×{k}×{n}")) {
            for parallel in [false, true] {
                let mut dst = vec![f32::NAN; m * stride];
                matmul(level, &mut dst, stride, lhs, rhs, parallel);
                let got: Vec<f32> = dst
                    .chunks(stride)
                    .flat_map(|row| {
                        // Columns past n are left alone.
                        assert!(row[n..].iter().all(|v| v.is_nan()));
                        row[..n].to_vec()
                    })
                    .collect();
                assert_close("matmul", level, n, &got, &want, tolerance);
                let base = baseline.get_or_insert_with(|| widen(&got));
                assert_close("matmul vs baseline", level, n, &got, base, tolerance);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_exp_and_erf_match_the_portable_ones() {
    if !Level::Avx512.is_supported() {
        eprintln!("avx512 exp/erf: levels none (this CPU has no AVX-512F)");
        return;
    }
    eprintln!("avx512 exp/erf: levels avx512");
    let xs: Vec<f32> = (-90_000..=90_000).map(|i| i as f32 / 1000.0).collect();
    let mut e = xs.clone();
    let mut g = xs.clone();
    // SAFETY: the CPU supports AVX-512F (checked above).
    unsafe {
        avx512::map(&mut e, |v| avx512::exp(v));
        avx512::map(&mut g, |v| avx512::erf(v));
    }
    for ((&x, &fast), &erf_fast) in xs.iter().zip(&e).zip(&g) {
        let exact = x.clamp(-87.0, 88.0).exp();
        assert!(
            ((fast - exact) / exact).abs() < 2e-7,
            "exp({x}): {fast} vs {exact}"
        );
        let exact = libm::erff(x);
        assert!(
            (erf_fast - exact).abs() < 5e-7,
            "erf({x}): {erf_fast} vs {exact}"
        );
    }
}
