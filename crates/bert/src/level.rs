//! The instruction-set level the CPU kernels run at, chosen at run time.
//!
//! A default build targets the x86-64 baseline (SSE2), so the kernels are compiled for several
//! levels and one is picked when the encoder loads: the best the CPU has ([`Level::best`]), or a
//! lower one asked for ([`crate::BertEncoder::set_level`]; goldset's `GOLDSET_SIMD` variable),
//! to compare levels or test every one on one machine.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// An instruction-set level of the kernels, ordered from the lowest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Plain Rust, compiled for the target's baseline (SSE2 on x86-64); every CPU.
    Baseline,
    /// x86-64 with AVX2 and FMA: 8 `f32` lanes (gemm's FMA micro-kernels).
    Avx2,
    /// x86-64 with AVX-512F: 16 `f32` lanes, masked tails (gemm's AVX-512 micro-kernels).
    Avx512,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 3] = [Level::Baseline, Level::Avx2, Level::Avx512];

    /// The name `GOLDSET_SIMD` takes and logs print: `baseline`, `avx2`, `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Baseline => "baseline",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// The best level this CPU supports (detected once).
    pub fn best() -> Level {
        static BEST: OnceLock<Level> = OnceLock::new();
        *BEST.get_or_init(detect)
    }

    /// Whether this CPU can run the level.
    pub fn is_supported(self) -> bool {
        self <= Level::best()
    }

    /// The levels this CPU can run, lowest first.
    pub fn supported() -> impl Iterator<Item = Level> {
        Level::ALL.into_iter().filter(|l| l.is_supported())
    }

    /// `self`, or the best supported level below it: what the kernels actually run, so that
    /// passing an unsupported level can never execute an instruction the CPU lacks.
    pub(crate) fn clamped(self) -> Level {
        self.min(Level::best())
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Level {
    if std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
    {
        Level::Avx512
    } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        Level::Avx2
    } else {
        Level::Baseline
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Level {
    Level::Baseline
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A level name that is not `baseline`, `avx2` or `avx512`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownLevel(pub String);

impl fmt::Display for UnknownLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown instruction-set level {:?} (expected baseline, avx2 or avx512)",
            self.0
        )
    }
}

impl std::error::Error for UnknownLevel {}

impl FromStr for Level {
    type Err = UnknownLevel;

    /// Parses a [`Level::name`], ignoring case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownLevel(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for level in Level::ALL {
            assert_eq!(level.name().parse::<Level>(), Ok(level));
        }
        assert_eq!(" AVX512 ".parse::<Level>(), Ok(Level::Avx512));
        let err = "sse9".parse::<Level>().unwrap_err();
        assert!(err.to_string().contains("\"sse9\""), "{err}");
    }

    #[test]
    fn the_best_level_matches_the_cpu_features() {
        let best = Level::best();
        eprintln!("level: this CPU's best is {best}");
        assert!(Level::Baseline.is_supported());
        assert_eq!(Level::supported().last(), Some(best));
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 =
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
            assert_eq!(Level::Avx2.is_supported(), avx2);
            assert_eq!(
                Level::Avx512.is_supported(),
                avx2 && std::is_x86_feature_detected!("avx512f")
            );
        }
        assert_eq!(Level::Avx512.clamped(), best);
        assert_eq!(Level::Baseline.clamped(), Level::Baseline);
    }
}
