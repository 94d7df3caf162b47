//! `goldset backup`: write the dataset to a JSON backup file, or `--check` that it matches.

use super::args::{BackupFile, MetadataFile, StatusArgs};
use super::{Context, Format};
use goldset::format::metadata_path_for;
use goldset::ops::backup::{backup, BackupOptions, BackupSummary};
use goldset::ops::diff::{diff, Side};
use goldset::ops::OpError;
use std::path::PathBuf;

/// Changed records `backup --check` lists in detail.
const CHECK_MAX_CHANGES: usize = 20;

#[derive(Debug, clap::Args)]
#[command(mut_arg("file", |a| a.help(
    "The backup file to write (`-`: stdout, and no metadata file unless --metadata-file)")))]
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
    if args.file.is_stdio() {
        return to_stdout(ctx, args);
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

/// `--file -`: the backup is written to a temporary file and checked as usual, then copied to
/// stdout, so that stdout gets a whole, valid backup or nothing. The metadata file (the
/// counts, for `verify` and for refusing to empty a backup) is written only where
/// `--metadata-file` says: the backup's own header holds the same counts. The summary goes to
/// stderr.
fn to_stdout(ctx: &Context, args: &BackupArgs) -> Result<i32, OpError> {
    if ctx.global.format == Format::Json {
        return Err(OpError::Refused(
            "--file - writes the backup on stdout, where --format json would write its summary \
             too: use one or the other"
                .into(),
        ));
    }
    let temp = tempfile::tempdir().map_err(OpError::io(std::env::temp_dir()))?;
    let file = temp.path().join("backup.json");
    let options = BackupOptions {
        metadata_file: match &args.metadata.metadata_file {
            Some(path) => path.clone(),
            None => temp.path().join("backup_metadata.json"),
        },
        file: file.clone(),
        filter: args.status.filter(),
        allow_empty: args.allow_empty,
    };
    let mut store = ctx.open_existing()?;
    let summary = backup(store.as_mut(), &options, &ctx.progress())?;
    let written = std::fs::File::open(&file).map_err(OpError::io(&file))?;
    ctx.out
        .stdout()
        .copy_from(written)
        .map_err(OpError::io(&file))?;
    // A reader that went away took only part of it: no summary says it was written.
    if ctx.out.stdout().is_open() {
        ctx.out.backup_to_stdout(&BackupSummary {
            file: PathBuf::from("stdout"),
            metadata_file: args.metadata.metadata_file.clone().unwrap_or_default(),
            ..summary
        });
    }
    Ok(0)
}

/// `--check`: 0 when the file holds what a backup would write now, else 1 with the changes.
/// `--file -` compares what stdin holds.
fn check(ctx: &Context, args: &BackupArgs) -> Result<i32, OpError> {
    let mut store = ctx.open_existing()?;
    let file = &args.file.file;
    let side = if args.file.is_stdio() {
        Side::Stream("stdin".into(), Box::new(std::io::stdin()))
    } else if !file.exists() {
        ctx.out
            .line(format!("backup --check: {} does not exist", file.display()));
        return Ok(1);
    } else {
        Side::File(file.clone())
    };
    let d = diff(
        side,
        Side::Database(store.as_mut(), args.status.filter()),
        CHECK_MAX_CHANGES,
    )?;
    ctx.out.diff(&d);
    Ok(if d.summary.is_equal() { 0 } else { 1 })
}
