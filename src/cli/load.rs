//! `goldset load`: load a native snapshot, all or nothing.

use super::args::{LockArgs, SnapshotFile, ToolArgs};
use super::{Context, Create};
use goldset::embed as embedders;
use goldset::ops::snapshot::load;
use goldset::ops::OpError;

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    #[command(flatten)]
    file: SnapshotFile,
    /// Load over a database that holds data.
    #[arg(long)]
    replace: bool,
    #[command(flatten)]
    tools: ToolArgs,
    #[command(flatten)]
    pub lock: LockArgs,
}

/// Checks the snapshot against its manifest and loads it.
pub fn run(ctx: &Context, args: &LoadArgs) -> Result<i32, OpError> {
    // Only a model chosen explicitly is compared with the snapshot's, and by its spec: building
    // the embedder (loading a model, probing a server) would cost more than the load.
    let configured = ctx
        .global
        .embedder
        .as_deref()
        .map(embedders::model_of_spec)
        .transpose()?;
    let mut store = ctx.open_store(Create::Yes, args.lock.wait())?;
    let summary = load(
        store.as_mut(),
        &args.file.file,
        args.replace,
        &args.tools.tools(),
        configured.as_ref(),
    )?;
    ctx.out.load(&summary);
    Ok(0)
}
