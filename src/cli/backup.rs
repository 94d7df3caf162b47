//! `goldset backup`: write the dataset to a JSON backup file, or `--check` that it matches.

use super::args::{BackupFile, MetadataFile, StatusArgs};
use super::Context;
use goldset::format::metadata_path_for;
use goldset::ops::backup::{backup, BackupOptions};
use goldset::ops::diff::{diff, Side};
use goldset::ops::OpError;

/// Changed records `backup --check` lists in detail.
const CHECK_MAX_CHANGES: usize = 20;

#[derive(Debug, clap::Args)]
#[command(mut_arg("file", |a| a.help("The backup file to write")))]
#[command(mut_arg("metadata_file", |a| a.help(
    "The metadata file to write [default: beside the backup, *_metadata.json]")))]
pub struct BackupArgs {
    #[command(flatten)]
    pub file: BackupFile,
    #[command(flatten)]
    metadata: MetadataFile,
    #[command(flatten)]
    pub status: StatusArgs,
    /// Allow replacing a backup that holds analyses with an empty one.
    #[arg(long)]
    allow_empty: bool,
    /// Write nothing: exit 1 (and show the changes) when the database no longer matches the
    /// backup file — the check a pull request runs.
    #[arg(long)]
    check: bool,
}

/// Writes the backup (or, with `--check`, compares it with the database).
pub fn run(ctx: &Context, args: &BackupArgs) -> Result<i32, OpError> {
    if args.check {
        return check(ctx, args);
    }
    let file = &args.file.file;
    let options = BackupOptions {
        metadata_file: match &args.metadata.metadata_file {
            Some(path) => path.clone(),
            None => metadata_path_for(file),
        },
        file: file.clone(),
        filter: args.status.filter(),
        allow_empty: args.allow_empty,
    };
    let mut store = ctx.open_existing()?;
    let summary = backup(store.as_mut(), &options, &ctx.progress())?;
    ctx.out.backup(&summary);
    Ok(0)
}

/// `--check`: 0 when the file holds what a backup would write now, else 1 with the changes.
fn check(ctx: &Context, args: &BackupArgs) -> Result<i32, OpError> {
    let mut store = ctx.open_existing()?;
    let file = &args.file.file;
    if !file.exists() {
        ctx.out
            .line(format!("backup --check: {} does not exist", file.display()));
        return Ok(1);
    }
    let d = diff(
        Side::File(file.clone()),
        Side::Database(store.as_mut(), args.status.filter()),
        CHECK_MAX_CHANGES,
    )?;
    ctx.out.diff(&d);
    Ok(if d.summary.is_equal() { 0 } else { 1 })
}
