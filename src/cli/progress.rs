//! Progress bars on a terminal, nothing when piped, `--quiet` or `--no-progress`.

use goldset::ops::{Progress, Unit};
use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::fmt::Write;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

/// An indicatif bar on stderr (hidden unless stderr is a terminal and output is wanted).
///
/// One bar for the whole command: a later [`Progress::start`] (restore counts bytes until the
/// file announces its chunks, then chunks) restyles it in place. Attaching a second draw target
/// instead would leave the first one's last line frozen above the live one.
pub struct Bar {
    bar: ProgressBar,
    visible: bool,
    attached: AtomicBool,
}

impl Bar {
    /// A bar that shows only when `wanted` and stderr is a terminal.
    pub fn new(wanted: bool) -> Self {
        let visible = wanted && std::io::stderr().is_terminal();
        let bar = ProgressBar::hidden();
        Bar {
            bar,
            visible,
            attached: AtomicBool::new(false),
        }
    }
}

/// The template of a bar counting `unit`.
fn template(unit: Unit) -> &'static str {
    match unit {
        Unit::Bytes => "{msg:>8} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        Unit::Records => "{msg:>8} [{bar:32}] {pos}/{len} {rate} eta {eta}",
        Unit::Chunks => "{msg:>8} [{bar:32}] {pos}/{len} chunks {rate} eta {eta}",
    }
}

/// The style of a bar counting `unit`; `{rate}` is a whole number per second (`23,250/s`).
fn style(unit: Unit) -> ProgressStyle {
    ProgressStyle::with_template(template(unit))
        .expect("valid template")
        .with_key("rate", |state: &ProgressState, w: &mut dyn Write| {
            let _ = write!(w, "{}/s", rate(state.per_sec()));
        })
        .progress_chars("=> ")
}

/// A rate as a whole count with thousands separators.
fn rate(per_sec: f64) -> HumanCount {
    HumanCount(if per_sec.is_finite() && per_sec > 0.0 {
        per_sec.round() as u64
    } else {
        0
    })
}

impl Progress for Bar {
    fn start(&self, message: &str, total: u64, unit: Unit) {
        if !self.visible {
            return;
        }
        self.bar.set_style(style(unit));
        self.bar.set_length(total);
        self.bar.reset();
        self.bar.set_message(message.to_owned());
        if !self.attached.swap(true, Ordering::Relaxed) {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    fn set(&self, done: u64) {
        if self.visible {
            self.bar.set_position(done);
        }
    }

    fn finish(&self) {
        if self.visible {
            self.bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_whole_numbers_with_separators() {
        assert_eq!(rate(23249.5456).to_string(), "23,250");
        assert_eq!(rate(0.4).to_string(), "0");
        assert_eq!(rate(f64::NAN).to_string(), "0");
        assert_eq!(rate(f64::INFINITY).to_string(), "0");
    }

    /// A second start restyles the one bar: its length and position are the new ones.
    #[test]
    fn a_second_start_restyles_the_same_bar() {
        let bar = Bar {
            bar: ProgressBar::hidden(),
            visible: true,
            attached: AtomicBool::new(true),
        };
        bar.start("restore", 1000, Unit::Bytes);
        bar.set(500);
        bar.start("restore", 20, Unit::Chunks);
        assert_eq!(bar.bar.length(), Some(20));
        assert_eq!(bar.bar.position(), 0);
    }
}
