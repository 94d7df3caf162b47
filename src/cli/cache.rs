//! `goldset cache`: the embedding cache per model, `--prune` or `--clear` it.

use super::args::LockArgs;
use super::{Context, Create};
use goldset::ops::cache::{cache, CacheAction};
use goldset::ops::OpError;

#[derive(Debug, clap::Args)]
pub struct CacheArgs {
    /// Remove the entries whose text no chunk embedded by their model has (edited or deleted
    /// texts, models no longer used). On SQLite the file is then compacted (`VACUUM`), so
    /// that the space goes back to the file system and out of later snapshots.
    #[arg(long, conflicts_with = "clear")]
    prune: bool,
    /// Remove every entry (the next restore embeds every chunk with the model again).
    #[arg(long)]
    clear: bool,
    /// With --prune or --clear: show what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

/// Reports the cache, after pruning or clearing it when asked.
pub fn run(ctx: &Context, args: &CacheArgs) -> Result<i32, OpError> {
    let action = match (args.prune, args.clear) {
        (_, true) => CacheAction::Clear,
        (true, false) => CacheAction::Prune,
        (false, false) => CacheAction::Report,
    };
    if args.dry_run && action != CacheAction::Report {
        let mut store = ctx.open_existing()?;
        let summary = cache(store.as_mut(), CacheAction::Report)?;
        ctx.out
            .cache_plan(&store.location(), &summary, action == CacheAction::Clear);
        return Ok(0);
    }
    let mut store = ctx.open_store(Create::No, args.lock.wait())?;
    let summary = cache(store.as_mut(), action)?;
    ctx.out.cache(&store.location(), &summary);
    Ok(0)
}
