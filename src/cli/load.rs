//! `goldset load`: load a native snapshot, all or nothing.

use super::args::{LockArgs, SnapshotFile, ToolArgs};
use super::{Context, Create};
use goldset::embed as embedders;
use goldset::ops::snapshot::{load, read_manifest, verify_snapshot};
use goldset::ops::OpError;

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    #[command(flatten)]
    file: SnapshotFile,
    /// Load over a database that holds data.
    #[arg(long)]
    replace: bool,
    /// Check the snapshot against its manifest and show what loading it would replace; load
    /// nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    tools: ToolArgs,
    #[command(flatten)]
    pub lock: LockArgs,
}

/// Checks the snapshot against its manifest and loads it.
pub fn run(ctx: &Context, args: &LoadArgs) -> Result<i32, OpError> {
    // Before a database is created for it.
    args.file.check_present()?;
    if args.dry_run {
        return dry_run(ctx, args);
    }
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

/// `--dry-run`: the checks `verify --snapshot` makes, and what the database holds now (the
/// database is only read; one that does not exist yet is not created).
fn dry_run(ctx: &Context, args: &LoadArgs) -> Result<i32, OpError> {
    let file = &args.file.file;
    let report = verify_snapshot(file, &args.tools.tools())?;
    if report.has_errors() {
        ctx.out.snapshot_report(file, &report);
        return Ok(1);
    }
    let manifest = read_manifest(file)?;
    let held = match ctx.open_existing() {
        Ok(mut store) => {
            if store.native_kind() != manifest.snapshot.kind {
                return Err(OpError::Refused(format!(
                    "{} is a {} snapshot; it loads into a database of that kind only",
                    file.display(),
                    manifest.snapshot.kind
                )));
            }
            Some((store.location(), store.snapshot()?.inventory()?))
        }
        Err(OpError::Store(goldset::store::StoreError::Missing(_))) => None,
        Err(e) => return Err(e),
    };
    if let Some((location, held)) = &held {
        if !args.replace && (held.analyses() > 0 || held.chunks > 0) {
            return Err(OpError::Refused(format!(
                "{location} already holds {held}; pass --replace to load the snapshot over it"
            )));
        }
    }
    ctx.out.load_plan(file, &manifest, held.as_ref());
    Ok(0)
}
