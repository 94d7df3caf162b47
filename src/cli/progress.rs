//! Progress bars on a terminal, nothing when piped or `--quiet`.

use goldset::ops::{Progress, Unit};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// An indicatif bar on stderr (hidden unless stderr is a terminal and output is wanted).
pub struct Bar {
    bar: ProgressBar,
    visible: bool,
}

impl Bar {
    /// A bar that shows only when `wanted` and stderr is a terminal.
    pub fn new(wanted: bool) -> Self {
        let visible = wanted && std::io::stderr().is_terminal();
        let bar = ProgressBar::hidden();
        Bar { bar, visible }
    }
}

impl Progress for Bar {
    fn start(&self, message: &str, total: u64, unit: Unit) {
        if !self.visible {
            return;
        }
        let template = match unit {
            Unit::Bytes => "{msg:>8} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            Unit::Records => "{msg:>8} [{bar:32}] {pos}/{len} {per_sec} eta {eta}",
            Unit::Chunks => "{msg:>8} [{bar:32}] {pos}/{len} chunks {per_sec} eta {eta}",
        };
        self.bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.set_message(message.to_owned());
        self.bar.set_draw_target(ProgressDrawTarget::stderr());
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
