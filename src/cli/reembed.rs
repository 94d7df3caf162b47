//! `goldset reembed`: regenerate every chunk's embedding in place.

use super::args::{CacheUse, LockArgs};
use super::{Context, Create};
use goldset::ops::reembed::{reembed, ReembedOptions};
use goldset::ops::OpError;

#[derive(Debug, clap::Args)]
pub struct ReembedArgs {
    /// Commit every N chunks instead of once at the end: an interrupted run keeps what it
    /// committed, and running it again carries on where it stopped.
    #[arg(long, value_name = "N", conflicts_with = "stale")]
    batch_commit: Option<usize>,
    /// Only the chunks whose text changed since their embedding was made (`verify` names
    /// them), with the model of the others, in one transaction.
    #[arg(long)]
    stale: bool,
    #[command(flatten)]
    pub cache: CacheUse,
    #[command(flatten)]
    pub lock: LockArgs,
    #[command(flatten)]
    pub eval: super::eval::EvalAfter,
}

/// Embeds the chunks that lack the configured model's embedding.
pub fn run(ctx: &Context, args: &ReembedArgs) -> Result<i32, OpError> {
    let embedder = ctx.lazy_embedder()?;
    let options = ReembedOptions {
        batch_commit: args.batch_commit.filter(|&n| n > 0),
        use_cache: args.cache.use_cache(),
        stale: args.stale,
    };
    let mut store = ctx.open_store(Create::No, args.lock.wait())?;
    let summary = reembed(store.as_mut(), embedder.as_ref(), &options, &ctx.progress())?;
    if args.eval.eval {
        return super::eval::after(
            ctx,
            "reembed",
            serde_json::json!(summary),
            &|| ctx.out.reembed(&summary),
            store.as_mut(),
            embedder.as_ref(),
        );
    }
    ctx.out.reembed(&summary);
    Ok(0)
}
