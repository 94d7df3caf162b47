//! The command line: argument definitions, dispatch to [`goldset::ops`], and rendering.

mod config;
mod progress;
mod render;

use clap::{Args, Parser, Subcommand, ValueEnum};
use goldset::embed::{self, Embedder};
use goldset::format::validate::UrlPolicy;
use goldset::format::{metadata_path_for, DEFAULT_BACKUP_PATH};
use goldset::model::StatusFilter;
use goldset::ops::backup::{backup, BackupOptions};
use goldset::ops::cache::{cache, CacheAction};
use goldset::ops::diff::{diff, Side};
use goldset::ops::embedding;
use goldset::ops::reembed::{reembed, ReembedOptions};
use goldset::ops::restore::{restore, OnConflict, RestoreOptions};
use goldset::ops::snapshot::{dump, load, verify_snapshot, DEFAULT_SNAPSHOT_PATH};
use goldset::ops::verify::{verify, VerifyOptions};
use goldset::ops::OpError;
use goldset::store::NativeTools;
use goldset::store::{self, Store};
use progress::Bar;
use render::Output;
use std::path::PathBuf;

/// Texts that `goldset embed` reads from stdin before embedding them.
const EMBED_WINDOW: usize = 1024;

/// Keep a RAG golden dataset safe: git-friendly JSON backups, verify, transactional restore.
#[derive(Debug, Parser)]
#[command(name = "goldset", version, propagate_version = true)]
pub struct Cli {
    /// Where the dataset lives: sqlite:PATH or postgres://USER@HOST:PORT/DB (PG* variables
    /// fill what the URL leaves out; prefer PGPASSWORD to a password in the URL).
    /// [default: sqlite:golden.db]
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// PostgreSQL schema that holds goldset's tables [default: public].
    #[arg(long, env = "GOLDSET_SCHEMA", global = true)]
    schema: Option<String>,
    /// Configuration file with defaults for these options [default: ./goldset.toml if present].
    #[arg(long, env = "GOLDSET_CONFIG", global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Embedding model for restored chunks: hash, hash:DIM, local:PATH_OR_ID or openai:MODEL
    /// [default: local:sentence-transformers/all-MiniLM-L6-v2 when the Hugging Face cache holds
    /// it, else hash].
    #[arg(long, env = "GOLDSET_EMBEDDER", global = true)]
    embedder: Option<String>,
    /// openai: base URL of an OpenAI-compatible API (default https://api.openai.com/v1; a URL
    /// without a path gets /v1).
    #[arg(long, env = "OPENAI_BASE_URL", global = true)]
    openai_base_url: Option<String>,
    /// openai: API key, sent as a Bearer token (not needed by most local servers).
    #[arg(long, env = "OPENAI_API_KEY", global = true, hide_env_values = true)]
    openai_api_key: Option<embed::ApiKey>,
    /// openai: texts per request [default: 64].
    #[arg(long, env = "GOLDSET_EMBED_BATCH_SIZE", global = true,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    embed_batch_size: Option<u32>,
    /// openai: requests in flight at once [default: 4].
    #[arg(long, env = "GOLDSET_EMBED_CONCURRENCY", global = true,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    embed_concurrency: Option<u32>,
    /// openai: seconds one request may take before it is retried [default: 120].
    #[arg(long, env = "GOLDSET_EMBED_TIMEOUT", global = true,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    embed_timeout: Option<u64>,
    /// No progress bars, no summary line (errors are still printed).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Output for people (text) or for programs (json, on stdout).
    #[arg(long, value_enum, default_value_t = Format::Text, global = true)]
    format: Format,
    /// More log output on stderr (-v info, -vv debug); GOLDSET_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// One JSON object on stdout.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the database and its schema (other commands do it too when they need to).
    Init,
    /// Write the dataset to a JSON backup file (and its metadata file), atomically.
    Backup(BackupArgs),
    /// Load a backup into the database in one transaction, embedding every chunk.
    Restore(RestoreArgs),
    /// Check a backup file and, unless --file-only, the database against it.
    Verify(VerifyArgs),
    /// Show what the database holds.
    Status,
    /// Show what the embedding cache holds per model; --prune removes the entries no chunk uses.
    Cache(CacheArgs),
    /// Write a native snapshot (SQLite file or pg_dump archive, embeddings included) and its manifest.
    Dump(DumpArgs),
    /// Load a native snapshot (all or nothing) after checking it against its manifest.
    Load(LoadArgs),
    /// Regenerate every chunk's embedding in place with the configured --embedder.
    Reembed(ReembedArgs),
    /// Print each TEXT's embedding as a JSON array, one per line (no TEXT: JSON strings, one per
    /// line, from stdin).
    Embed(EmbedArgs),
    /// Show what changed between two backups, or a backup and the database (`db:`).
    Diff(DiffArgs),
    /// The history of a backup file tracked in git: counts and changes per commit.
    Log(LogArgs),
    /// Write a synthetic dataset as a backup file (for benchmarks and trials).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
struct EmbedArgs {
    /// Texts to embed.
    texts: Vec<String>,
}

#[derive(Debug, Args)]
struct DumpArgs {
    /// The snapshot file (its manifest goes beside it: FILE.manifest.json).
    #[arg(long, short, default_value = DEFAULT_SNAPSHOT_PATH)]
    file: PathBuf,
    #[command(flatten)]
    tools: ToolArgs,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// The snapshot file.
    #[arg(long, short, default_value = DEFAULT_SNAPSHOT_PATH)]
    file: PathBuf,
    /// Load over a database that holds data.
    #[arg(long)]
    replace: bool,
    #[command(flatten)]
    tools: ToolArgs,
}

/// Where the PostgreSQL client tools are.
#[derive(Debug, Args)]
struct ToolArgs {
    /// Folder with pg_dump and pg_restore (default: PATH).
    #[arg(long, env = "GOLDSET_PG_BIN", value_name = "DIR")]
    pg_bin: Option<PathBuf>,
}

impl ToolArgs {
    fn tools(&self) -> NativeTools {
        NativeTools {
            pg_bin: self.pg_bin.clone(),
        }
    }
}

#[derive(Debug, Args)]
struct DiffArgs {
    /// The old side: a backup file, or `db:` for the database.
    old: String,
    /// The new side: a backup file, or `db:` for the database.
    new: String,
    /// For a `db:` side: statuses to include (as for backup); `all` for every analysis.
    #[arg(long, value_delimiter = ',', default_value = "completed")]
    status: Vec<String>,
    /// How many changed records to list in detail (all are counted).
    #[arg(long, default_value_t = 50)]
    max_changes: usize,
}

#[derive(Debug, Args)]
struct LogArgs {
    /// The backup file, inside a git work tree.
    #[arg(long, short, default_value = DEFAULT_BACKUP_PATH)]
    file: PathBuf,
    /// At most this many commits, newest first.
    #[arg(long, short = 'n', default_value_t = 20)]
    max_count: usize,
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// The backup file to write.
    #[arg(long, short)]
    file: PathBuf,
    /// Number of analyses.
    #[arg(long, default_value_t = 100)]
    analyses: u64,
    /// Chunks per analysis.
    #[arg(long, default_value_t = 10)]
    chunks_per_analysis: u64,
    /// Seed: the same seed gives the same file.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, Args)]
struct BackupArgs {
    /// The backup file to write.
    #[arg(long, short, default_value = DEFAULT_BACKUP_PATH)]
    file: PathBuf,
    /// The metadata file to write [default: beside the backup, *_metadata.json].
    #[arg(long)]
    metadata_file: Option<PathBuf>,
    /// Statuses to include (repeat or separate with commas); `all` for every analysis.
    #[arg(long, value_delimiter = ',', default_value = "completed")]
    status: Vec<String>,
    /// Allow replacing a backup that holds analyses with an empty one.
    #[arg(long)]
    allow_empty: bool,
    /// Write nothing: exit 1 (and show the changes) when the database no longer matches the
    /// backup file — the check a pull request runs.
    #[arg(long)]
    check: bool,
}

#[derive(Debug, Args)]
struct RestoreArgs {
    /// The backup file to load.
    #[arg(long, short, default_value = DEFAULT_BACKUP_PATH)]
    file: PathBuf,
    /// The metadata file to check [default: beside the backup, if present].
    #[arg(long)]
    metadata_file: Option<PathBuf>,
    /// Make the database hold exactly the file's content (delete and load commit together).
    #[arg(long)]
    replace: bool,
    /// For an additive restore, what to do with ids that already exist.
    #[arg(long, value_enum, default_value_t = ConflictArg::Fail)]
    on_conflict: ConflictArg,
    /// Validate and show what would change, then roll back.
    #[arg(long)]
    dry_run: bool,
    /// If another restore is running, fail at once instead of waiting for it.
    #[arg(long, overrides_with = "wait")]
    no_wait: bool,
    /// If another restore is running, wait for it (the default).
    #[arg(long, overrides_with = "no_wait")]
    wait: bool,
    /// Chunks embedded and written per batch.
    #[arg(long, default_value_t = 256, hide = true)]
    batch_chunks: usize,
    /// Embed every chunk with the model, ignoring the embedding cache (fresh vectors still
    /// replace the cached ones).
    #[arg(long)]
    no_cache: bool,
    #[command(flatten)]
    urls: UrlArgs,
}

#[derive(Debug, Args)]
struct CacheArgs {
    /// Remove the entries whose text no chunk embedded by their model has (edited or deleted
    /// texts, models no longer used). On SQLite the file is then compacted (`VACUUM`), so
    /// that the space goes back to the file system and out of later snapshots.
    #[arg(long, conflicts_with = "clear")]
    prune: bool,
    /// Remove every entry (the next restore embeds every chunk with the model again).
    #[arg(long)]
    clear: bool,
}

#[derive(Debug, Args)]
struct ReembedArgs {
    /// Commit every N chunks instead of once at the end: an interrupted run keeps what it
    /// committed, and running it again carries on where it stopped.
    #[arg(long, value_name = "N")]
    batch_commit: Option<usize>,
    /// Embed every chunk with the model, ignoring the embedding cache.
    #[arg(long)]
    no_cache: bool,
    /// If a restore is running, fail at once instead of waiting for it.
    #[arg(long)]
    no_wait: bool,
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

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The backup file to check.
    #[arg(long, short, default_value = DEFAULT_BACKUP_PATH)]
    file: PathBuf,
    /// The metadata file to check [default: beside the backup, if present].
    #[arg(long)]
    metadata_file: Option<PathBuf>,
    /// Check the file alone, not the database.
    #[arg(long)]
    file_only: bool,
    /// Statuses the backup covers (as given to backup --status); `all` for every analysis.
    #[arg(long, value_delimiter = ',', default_value = "completed")]
    status: Vec<String>,
    /// Check a native snapshot against its manifest instead of a JSON backup.
    #[arg(long, value_name = "SNAPSHOT", conflicts_with_all = ["file_only", "metadata_file"])]
    snapshot: Option<PathBuf>,
    #[command(flatten)]
    tools: ToolArgs,
    #[command(flatten)]
    urls: UrlArgs,
}

/// The URL contract's deny lists.
#[derive(Debug, Args)]
struct UrlArgs {
    /// Also refuse URLs on this host and its subdomains (repeatable).
    #[arg(long = "deny-host", value_name = "HOST")]
    deny_hosts: Vec<String>,
    /// Also refuse URLs containing this word (repeatable).
    #[arg(long = "deny-word", value_name = "WORD")]
    deny_words: Vec<String>,
    /// Drop the default deny lists (placeholder, example.com/org/net, test.local, localhost).
    #[arg(long)]
    no_default_deny: bool,
}

impl UrlArgs {
    fn policy(&self) -> UrlPolicy {
        let mut policy = if self.no_default_deny {
            UrlPolicy {
                deny_hosts: Vec::new(),
                deny_words: Vec::new(),
            }
        } else {
            UrlPolicy::default()
        };
        policy.deny_hosts.extend(self.deny_hosts.iter().cloned());
        policy.deny_words.extend(self.deny_words.iter().cloned());
        policy
    }
}

/// Parses the command line, runs it, and returns the process exit code.
pub fn run() -> i32 {
    let mut cli = Cli::parse();
    init_logging(cli.verbose);
    let out = Output::new(cli.format, cli.quiet);
    match config::load(cli.config.as_deref()).and_then(|c| {
        cli.apply(c);
        dispatch(&cli, &out)
    }) {
        Ok(code) => code,
        Err(e) => {
            out.error(&e);
            e.exit_code()
        }
    }
}

/// Where the dataset lives when no flag, environment variable or configuration file says.
const DEFAULT_DATABASE_URL: &str = "sqlite:golden.db";
/// PostgreSQL schema when no flag, environment variable or configuration file says.
const DEFAULT_SCHEMA: &str = "public";

impl Cli {
    /// Fills what neither a flag nor the environment set from the configuration file (the
    /// accessors below supply the built-in defaults).
    fn apply(&mut self, config: config::Config) {
        self.database_url = self.database_url.take().or(config.database_url);
        self.schema = self.schema.take().or(config.schema);
        self.embedder = self.embedder.take().or(config.embedder);
        self.openai_base_url = self.openai_base_url.take().or(config.openai_base_url);
    }

    fn database_url(&self) -> &str {
        self.database_url.as_deref().unwrap_or(DEFAULT_DATABASE_URL)
    }

    fn schema(&self) -> &str {
        self.schema.as_deref().unwrap_or(DEFAULT_SCHEMA)
    }
}

fn status_filter(statuses: &[String]) -> StatusFilter {
    if statuses.iter().any(|s| s == "all") {
        StatusFilter::All
    } else {
        StatusFilter::Only(statuses.to_vec())
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GOLDSET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}

fn open_store(cli: &Cli, create: bool) -> Result<Box<dyn Store>, OpError> {
    let wait_for_lock = match &cli.command {
        Command::Restore(args) => !args.no_wait,
        Command::Reembed(args) => !args.no_wait,
        _ => true,
    };
    let options = store::OpenOptions {
        create,
        schema: cli.schema().to_owned(),
        wait_for_lock,
        ..Default::default()
    };
    Ok(store::open(cli.database_url(), &options)?)
}

fn embedder(cli: &Cli) -> Result<Box<dyn Embedder>, OpError> {
    let settings = embed::EmbedderSettings {
        openai_base_url: cli.openai_base_url.clone(),
        openai_api_key: cli.openai_api_key.clone(),
        openai_batch_size: cli.embed_batch_size.map(|n| n as usize),
        openai_max_in_flight: cli.embed_concurrency.map(|n| n as usize),
        openai_timeout: cli.embed_timeout.map(std::time::Duration::from_secs),
        ..Default::default()
    };
    let spec = match &cli.embedder {
        Some(spec) => spec.clone(),
        None => {
            let (spec, notice) = embed::default_spec();
            if let Some(notice) = notice.filter(|_| !cli.quiet) {
                eprintln!("note: {notice}");
            }
            spec
        }
    };
    Ok(embed::from_spec(&spec, &settings)?)
}

fn dispatch(cli: &Cli, out: &Output) -> Result<i32, OpError> {
    let bar = Bar::new(!cli.quiet && cli.format == Format::Text);
    match &cli.command {
        Command::Init => {
            let mut store = open_store(cli, true)?;
            let inventory = store.snapshot()?.inventory()?;
            out.status("init", &store.location(), &inventory);
            Ok(0)
        }
        Command::Status => {
            let mut store = open_store(cli, false)?;
            let inventory = store.snapshot()?.inventory()?;
            out.status("status", &store.location(), &inventory);
            Ok(0)
        }
        Command::Cache(args) => {
            let mut store = open_store(cli, false)?;
            let action = match (args.prune, args.clear) {
                (_, true) => CacheAction::Clear,
                (true, false) => CacheAction::Prune,
                (false, false) => CacheAction::Report,
            };
            let summary = cache(store.as_mut(), action)?;
            out.cache(&store.location(), &summary);
            Ok(0)
        }
        Command::Backup(args) if args.check => {
            let mut store = open_store(cli, false)?;
            let filter = status_filter(&args.status);
            if !args.file.exists() {
                out.line(format!(
                    "backup --check: {} does not exist",
                    args.file.display()
                ));
                return Ok(1);
            }
            let d = diff(
                Side::File(args.file.clone()),
                Side::Database(store.as_mut(), filter),
                20,
            )?;
            out.diff(&d);
            Ok(if d.summary.is_equal() { 0 } else { 1 })
        }
        Command::Diff(args) => {
            if args.old.starts_with("db:") && args.new.starts_with("db:") {
                return Err(OpError::Refused(
                    "at most one side of a diff can be db:".into(),
                ));
            }
            let mut store = if args.old.starts_with("db:") || args.new.starts_with("db:") {
                Some(open_store(cli, false)?)
            } else {
                None
            };
            let filter = status_filter(&args.status);
            let file = |spec: &str| Side::File(PathBuf::from(spec));
            let (old, new) = match store.as_mut() {
                Some(s) if args.old.starts_with("db:") => {
                    (Side::Database(s.as_mut(), filter), file(&args.new))
                }
                Some(s) => (file(&args.old), Side::Database(s.as_mut(), filter)),
                None => (file(&args.old), file(&args.new)),
            };
            let d = diff(old, new, args.max_changes)?;
            out.diff(&d);
            Ok(if d.summary.is_equal() { 0 } else { 1 })
        }
        Command::Log(args) => {
            let entries = goldset::ops::history::log(&args.file, args.max_count)?;
            out.log(&args.file, &entries);
            Ok(0)
        }
        Command::Backup(args) => {
            let filter = status_filter(&args.status);
            let options = BackupOptions {
                metadata_file: args
                    .metadata_file
                    .clone()
                    .unwrap_or_else(|| metadata_path_for(&args.file)),
                file: args.file.clone(),
                filter,
                allow_empty: args.allow_empty,
            };
            let mut store = open_store(cli, false)?;
            let summary = backup(store.as_mut(), &options, &bar)?;
            out.backup(&summary);
            Ok(0)
        }
        Command::Restore(args) => {
            let embedder = embedder(cli)?;
            let options = RestoreOptions {
                file: args.file.clone(),
                metadata_file: args.metadata_file.clone(),
                replace: args.replace,
                on_conflict: match args.on_conflict {
                    ConflictArg::Fail => OnConflict::Fail,
                    ConflictArg::Skip => OnConflict::Skip,
                    ConflictArg::Update => OnConflict::Update,
                },
                dry_run: args.dry_run,
                url_policy: args.urls.policy(),
                batch_chunks: args.batch_chunks,
                use_cache: !args.no_cache,
            };
            let mut store = open_store(cli, !args.dry_run)?;
            let summary = restore(store.as_mut(), embedder.as_ref(), &options, &bar)?;
            out.restore(&summary);
            Ok(0)
        }
        Command::Generate(args) => {
            let spec = goldset::synthetic::Spec {
                analyses: args.analyses,
                chunks_per_analysis: args.chunks_per_analysis,
                seed: args.seed,
            };
            let io_error = OpError::io(&args.file);
            let write = || -> std::io::Result<goldset::model::Counts> {
                let mut file = goldset::ops::atomic::AtomicFile::create(&args.file)?;
                let counts =
                    goldset::synthetic::write_backup(spec, std::io::BufWriter::new(file.file()))?;
                file.commit()?;
                std::fs::write(
                    metadata_path_for(&args.file),
                    goldset::format::writer::metadata_file_content(&counts)?,
                )?;
                Ok(counts)
            };
            let counts = write().map_err(io_error)?;
            out.line(format!(
                "generate: {} written ({counts})",
                args.file.display()
            ));
            Ok(0)
        }
        Command::Verify(args) if args.snapshot.is_some() => {
            let file = args.snapshot.as_deref().expect("checked");
            let report = verify_snapshot(file, &args.tools.tools())?;
            out.snapshot_report(file, &report);
            Ok(if report.has_errors() { 1 } else { 0 })
        }
        Command::Embed(args) => {
            let embedder = embedder(cli)?;
            let mut stdout = std::io::stdout().lock();
            let mut print = |texts: &[String]| -> Result<(), OpError> {
                use std::io::Write;
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                for v in embedding::embed_texts(embedder.as_ref(), &refs)? {
                    let line = serde_json::to_string(&v).expect("floats serialize");
                    writeln!(stdout, "{line}").map_err(OpError::io("stdout"))?;
                }
                Ok(())
            };
            if !args.texts.is_empty() {
                print(&args.texts)?;
                return Ok(0);
            }
            // Windows of texts: sorted by length within each, printed in input order, memory flat.
            let mut window = Vec::new();
            for (i, line) in std::io::stdin().lines().enumerate() {
                let line = line.map_err(OpError::io("stdin"))?;
                if line.trim().is_empty() {
                    continue;
                }
                window.push(serde_json::from_str::<String>(&line).map_err(|e| {
                    OpError::Refused(format!(
                        "stdin:{}: expected a JSON string per line: {e}",
                        i + 1
                    ))
                })?);
                if window.len() == EMBED_WINDOW {
                    print(&std::mem::take(&mut window))?;
                }
            }
            print(&window)?;
            Ok(0)
        }
        Command::Reembed(args) => {
            let embedder = embedder(cli)?;
            let options = ReembedOptions {
                batch_commit: args.batch_commit.filter(|&n| n > 0),
                use_cache: !args.no_cache,
            };
            let mut store = open_store(cli, false)?;
            let summary = reembed(store.as_mut(), embedder.as_ref(), &options, &bar)?;
            out.reembed(&summary);
            Ok(0)
        }
        Command::Dump(args) => {
            let mut store = open_store(cli, false)?;
            let summary = dump(store.as_mut(), &args.file, &args.tools.tools())?;
            out.dump(&summary);
            Ok(0)
        }
        Command::Load(args) => {
            let embedder = embedder(cli)?;
            let mut store = open_store(cli, true)?;
            let summary = load(
                store.as_mut(),
                &args.file,
                args.replace,
                &args.tools.tools(),
                embedder.as_ref(),
            )?;
            out.load(&summary);
            Ok(0)
        }
        Command::Verify(args) => {
            let options = VerifyOptions {
                file: args.file.clone(),
                metadata_file: args.metadata_file.clone(),
                url_policy: args.urls.policy(),
                filter: status_filter(&args.status),
            };
            let verification = if args.file_only {
                verify(None, &options, &bar)?
            } else {
                let embedder = embedder(cli)?;
                let mut store = open_store(cli, false)?;
                verify(Some((store.as_mut(), embedder.as_ref())), &options, &bar)?
            };
            out.verification(&verification);
            Ok(if verification.report.has_errors() {
                1
            } else {
                0
            })
        }
    }
}
