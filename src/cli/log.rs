//! `goldset log`: the history of a backup file tracked in git.

use super::args::BackupFile;
use super::Context;
use goldset::ops::history::log;
use goldset::ops::OpError;

#[derive(Debug, clap::Args)]
#[command(mut_arg("file", |a| a.help("The backup file, inside a git work tree")))]
pub struct LogArgs {
    #[command(flatten)]
    file: BackupFile,
    /// At most this many commits, newest first.
    #[arg(long, short = 'n', default_value_t = 20)]
    max_count: usize,
}

/// Lists the commits that changed the file, newest first.
pub fn run(ctx: &Context, args: &LogArgs) -> Result<i32, OpError> {
    let entries = log(&args.file.file, args.max_count)?;
    ctx.out.log(&args.file.file, &entries);
    Ok(0)
}
