//! The `goldset` binary: parse arguments, run, render errors, set the exit code.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
