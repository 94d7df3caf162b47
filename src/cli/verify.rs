//! `goldset verify`: check a backup file (and the database against it), or a native snapshot.

use super::args::{BackupFile, MetadataFile, StatusArgs, ToolArgs, UrlArgs};
use super::Context;
use goldset::ops::snapshot::verify_snapshot;
use goldset::ops::verify::{verify, VerifyOptions};
use goldset::ops::OpError;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
#[command(mut_arg("file", |a| a.help("The backup file to check (`-`: stdin)")))]
#[command(mut_arg("status", |a| a.help(
    "Statuses the backup covers (as given to backup --status); `all` for every analysis")))]
pub struct VerifyArgs {
    #[command(flatten)]
    pub file: BackupFile,
    #[command(flatten)]
    metadata: MetadataFile,
    /// Check the file alone, not the database.
    #[arg(long)]
    file_only: bool,
    #[command(flatten)]
    pub status: StatusArgs,
    /// Check a native snapshot against its manifest instead of a JSON backup.
    #[arg(long, value_name = "SNAPSHOT", conflicts_with_all = ["file_only", "metadata_file"])]
    snapshot: Option<PathBuf>,
    #[command(flatten)]
    tools: ToolArgs,
    #[command(flatten)]
    urls: UrlArgs,
}

/// Verifies; exit 1 when a check failed.
pub fn run(ctx: &Context, args: &VerifyArgs) -> Result<i32, OpError> {
    if let Some(snapshot) = &args.snapshot {
        return verify_native(ctx, snapshot, args);
    }
    let options = VerifyOptions {
        file: args.file.input()?,
        metadata_file: args.metadata.metadata_file.clone(),
        url_policy: args.urls.policy(),
        filter: args.status.filter(),
    };
    let bar = ctx.progress();
    let verification = if args.file_only {
        verify(None, &options, &bar)?
    } else {
        // No model is loaded or asked: a configured embedder only names the model demanded.
        let demanded = ctx
            .global
            .embedder
            .as_deref()
            .map(goldset::embed::model_of_spec)
            .transpose()?;
        let mut store = ctx.open_existing()?;
        verify(Some((store.as_mut(), demanded.as_ref())), &options, &bar)?
    };
    ctx.out.verification(&verification);
    Ok(if verification.report.has_errors() {
        1
    } else {
        0
    })
}

/// `--snapshot`: checks a native snapshot against its manifest.
fn verify_native(ctx: &Context, file: &Path, args: &VerifyArgs) -> Result<i32, OpError> {
    let report = verify_snapshot(file, &args.tools.tools())?;
    ctx.out.snapshot_report(file, &report);
    Ok(if report.has_errors() { 1 } else { 0 })
}
