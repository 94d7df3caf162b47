//! `goldset diff`: what changed between two backups, or a backup and the database (`db:`).

use super::args::{StatusArgs, STDIO};
use super::Context;
use goldset::model::StatusFilter;
use goldset::ops::diff::{diff, Side};
use goldset::ops::OpError;
use goldset::store::Store;
use std::path::PathBuf;

/// How a side names the database.
const DATABASE_SIDE: &str = "db:";

#[derive(Debug, clap::Args)]
#[command(mut_arg("status", |a| a.help(
    "For a `db:` side: statuses to include (as for backup); `all` for every analysis")))]
pub struct DiffArgs {
    /// The old side: a backup file, `-` for stdin, or `db:` for the database.
    old: String,
    /// The new side: a backup file, `-` for stdin, or `db:` for the database.
    new: String,
    #[command(flatten)]
    status: StatusArgs,
    /// How many changed records to list in detail (all are counted).
    #[arg(long, default_value_t = 50)]
    max_changes: usize,
}

/// Shows the changes; exit 1 when there are any.
pub fn run(ctx: &Context, args: &DiffArgs) -> Result<i32, OpError> {
    let uses_db = |spec: &str| spec.starts_with(DATABASE_SIDE);
    if uses_db(&args.old) && uses_db(&args.new) {
        return Err(OpError::Refused(
            "at most one side of a diff can be db:".into(),
        ));
    }
    if args.old == STDIO && args.new == STDIO {
        return Err(OpError::Refused(
            "at most one side of a diff can be - (stdin)".into(),
        ));
    }
    let mut store = if uses_db(&args.old) || uses_db(&args.new) {
        Some(ctx.open_existing()?)
    } else {
        None
    };
    let (old, new) = sides(args, store.as_deref_mut(), args.status.filter());
    let d = diff(old, new, args.max_changes)?;
    ctx.out.diff(&d);
    Ok(if d.summary.is_equal() { 0 } else { 1 })
}

/// The two sides: files, except the one that says `db:` when `store` is open.
fn sides<'s>(
    args: &DiffArgs,
    store: Option<&'s mut (dyn Store + 'static)>,
    filter: StatusFilter,
) -> (Side<'s>, Side<'s>) {
    let file = |spec: &str| {
        if spec == STDIO {
            Side::Stream("stdin".into(), Box::new(std::io::stdin()))
        } else {
            Side::File(PathBuf::from(spec))
        }
    };
    match store {
        Some(s) if args.old.starts_with(DATABASE_SIDE) => {
            (Side::Database(s, filter), file(&args.new))
        }
        Some(s) => (file(&args.old), Side::Database(s, filter)),
        None => (file(&args.old), file(&args.new)),
    }
}
