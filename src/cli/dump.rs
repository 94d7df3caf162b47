//! `goldset dump`: a native snapshot and its manifest.

use super::args::{SnapshotFile, ToolArgs};
use super::Context;
use goldset::ops::snapshot::dump;
use goldset::ops::OpError;

#[derive(Debug, clap::Args)]
#[command(mut_arg("file", |a| a.help("The snapshot file (its manifest goes beside it: FILE.manifest.json)")))]
pub struct DumpArgs {
    #[command(flatten)]
    file: SnapshotFile,
    #[command(flatten)]
    tools: ToolArgs,
}

/// Writes the snapshot.
pub fn run(ctx: &Context, args: &DumpArgs) -> Result<i32, OpError> {
    let mut store = ctx.open_existing()?;
    let summary = dump(store.as_mut(), &args.file.file, &args.tools.tools())?;
    ctx.out.dump(&summary);
    Ok(0)
}
