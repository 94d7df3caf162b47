//! `goldset restore`: load a backup into the database in one transaction.

use super::args::{BackupFile, CacheUse, LockArgs, MetadataFile, UrlArgs};
use super::{Context, Create};
use clap::ValueEnum;
use goldset::ops::restore::{restore, OnConflict, RestoreOptions};
use goldset::ops::OpError;

#[derive(Debug, clap::Args)]
#[command(mut_arg("file", |a| a.help("The backup file to load (`-`: stdin)")))]
#[command(mut_arg("no_cache", |a| a.help(
    "Embed every chunk with the model, ignoring the embedding cache (fresh vectors still \
     replace the cached ones)")))]
pub struct RestoreArgs {
    #[command(flatten)]
    file: BackupFile,
    #[command(flatten)]
    pub metadata: MetadataFile,
    /// Make the database hold exactly the file's content (delete and load commit together).
    #[arg(long)]
    replace: bool,
    /// On an application's tables: go ahead even when rows of its other tables reference rows
    /// the restore deletes (their ON DELETE CASCADE / SET NULL then applies). Without it, such a
    /// restore is refused, naming the tables and rows, and nothing changes.
    #[arg(long)]
    allow_cascade: bool,
    /// With --replace on goldset's own tables: delete everything and load in bulk (indexes
    /// rebuilt) instead of applying only the difference. The difference is the default where
    /// every stored chunk was embedded by this embedder's model; a bulk load is faster when most
    /// of the file differs from the database.
    #[arg(long, requires = "replace")]
    bulk: bool,
    /// For an additive restore, what to do with ids that already exist.
    #[arg(long, value_enum, default_value_t = ConflictArg::Fail)]
    on_conflict: ConflictArg,
    /// Validate and show what would change, then roll back.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    pub lock: LockArgs,
    /// Chunks embedded and written per batch.
    #[arg(long, default_value_t = 256, hide = true)]
    batch_chunks: usize,
    #[command(flatten)]
    pub cache: CacheUse,
    #[command(flatten)]
    urls: UrlArgs,
    #[command(flatten)]
    pub eval: super::eval::EvalAfter,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ConflictArg {
    /// Refuse the restore and list the ids.
    Fail,
    /// Keep the database's analysis, skip the file's.
    Skip,
    /// Replace the database's analysis with the file's.
    Update,
}

impl From<ConflictArg> for OnConflict {
    fn from(arg: ConflictArg) -> Self {
        match arg {
            ConflictArg::Fail => OnConflict::Fail,
            ConflictArg::Skip => OnConflict::Skip,
            ConflictArg::Update => OnConflict::Update,
        }
    }
}

/// Restores the backup (or, with `--dry-run`, shows what would change).
pub fn run(ctx: &Context, args: &RestoreArgs) -> Result<i32, OpError> {
    // Checked before anything is built or created: a missing file leaves no empty database.
    let file = args.file.input()?;
    let embedder = ctx.lazy_embedder()?;
    let options = RestoreOptions {
        file,
        metadata_file: args.metadata.metadata_file.clone(),
        replace: args.replace,
        on_conflict: args.on_conflict.into(),
        dry_run: args.dry_run,
        url_policy: args.urls.policy(),
        batch_chunks: args.batch_chunks,
        use_cache: args.cache.use_cache(),
        allow_cascade: args.allow_cascade,
        in_bulk: args.bulk,
    };
    let create = if args.dry_run {
        Create::No
    } else {
        Create::Yes
    };
    let mut store = ctx.open_store(create, args.lock.wait())?;
    let summary = restore(store.as_mut(), embedder.as_ref(), &options, &ctx.progress())?;
    if args.eval.eval && !args.dry_run {
        return super::eval::after(
            ctx,
            "restore",
            serde_json::json!(summary),
            &|| ctx.out.restore(&summary),
            store.as_mut(),
            embedder.as_ref(),
        );
    }
    ctx.out.restore(&summary);
    Ok(0)
}
