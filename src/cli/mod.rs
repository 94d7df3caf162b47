//! The command line: the top-level [`Cli`] with its global options, and a dispatch to one
//! module per subcommand (its arguments and a short `run` over [`goldset::ops`]). Argument groups
//! several subcommands share are in `args`; rendering is in `render`, and everything printed on
//! stdout goes through `stdout`.

mod adopt;
mod args;
mod backup;
mod cache;
mod config;
mod diff;
mod dump;
mod embed;
mod eval;
mod generate;
mod init;
mod load;
mod log;
mod notice;
mod progress;
mod reembed;
mod render;
mod restore;
mod shell;
mod status;
mod stdout;
mod summary;
mod verify;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use goldset::embed::{self as embedders, Embedder};
use goldset::ops::OpError;
use goldset::store::{self, Store};
use progress::Bar;
use render::Output;
use std::path::PathBuf;

/// Keep a RAG golden dataset safe: git-friendly JSON backups, verify, transactional restore.
#[derive(Debug, Parser)]
#[command(name = "goldset", version, propagate_version = true,
          arg_required_else_help = true, after_long_help = AFTER_LONG_HELP)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// The end of `goldset --help`: the exit codes and the environment variables goldset reads.
const AFTER_LONG_HELP: &str = "\
Exit codes:
  0  success (for diff and backup --check: no difference)
  1  the data is bad, a check failed, or (diff, backup --check) there are differences
  2  usage, I/O, database, tool or embedder error

Environment:
  DATABASE_URL, GOLDSET_SCHEMA, GOLDSET_CONFIG   --database-url, --schema, --config
  PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE, PGAPPNAME, PGOPTIONS, PGSERVICE
                           fill what a postgres:// URL leaves out (libpq's meaning)
  GOLDSET_EMBEDDER, OPENAI_BASE_URL, OPENAI_API_KEY, GOLDSET_EMBED_BATCH_SIZE,
  GOLDSET_EMBED_CONCURRENCY, GOLDSET_EMBED_TIMEOUT, GOLDSET_EMBEDDER_RETRY_WINDOW
                           the embedder options of the same names
  HF_HOME, HF_HUB_CACHE    where local: models are looked up (the Hugging Face cache)
  HF_HUB_OFFLINE=1         never download a local: model
  GOLDSET_PG_BIN           folder with pg_dump and pg_restore (--pg-bin)
  GOLDSET_LOG              log filter (e.g. debug, goldset=trace); overrides -v
  NO_COLOR                 no colour in log lines (there is none unless stderr is a terminal)

A flag beats its environment variable, which beats goldset.toml.";

/// Heading of the options every command takes.
const GLOBAL_HEADING: &str = "Global options";
/// Heading of the options that choose and tune the embedder.
const EMBEDDER_HEADING: &str = "Embedder options";

/// Options every subcommand takes.
#[derive(Debug, Args)]
#[command(next_help_heading = GLOBAL_HEADING)]
struct Global {
    /// Where the dataset lives: sqlite:PATH or postgres://USER@HOST:PORT/DB (PG* variables
    /// fill what the URL leaves out; prefer PGPASSWORD to a password in the URL).
    /// [default: sqlite:golden.db]
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// PostgreSQL schema that holds goldset's tables [default: public].
    #[arg(long, env = "GOLDSET_SCHEMA", global = true, hide_env_values = true)]
    schema: Option<String>,
    /// Configuration file with defaults for these options [default: ./goldset.toml if present].
    #[arg(
        long,
        env = "GOLDSET_CONFIG",
        global = true,
        hide_env_values = true,
        value_name = "PATH"
    )]
    config: Option<PathBuf>,
    /// Embedding model for restored chunks: hash, hash:DIM, local:PATH_OR_ID or openai:MODEL
    /// [default: local:sentence-transformers/all-MiniLM-L6-v2 when the Hugging Face cache holds
    /// it, else hash].
    #[arg(long, env = "GOLDSET_EMBEDDER", global = true, hide_env_values = true,
          help_heading = EMBEDDER_HEADING)]
    embedder: Option<String>,
    /// openai: base URL of an OpenAI-compatible API [default: https://api.openai.com/v1]; a
    /// URL ending in /embeddings is used as is, a bare host tries /v1/embeddings, then
    /// /embeddings.
    #[arg(long, env = "OPENAI_BASE_URL", global = true, hide_env_values = true,
          help_heading = EMBEDDER_HEADING)]
    openai_base_url: Option<String>,
    /// openai: API key, sent as a Bearer token (not needed by most local servers).
    #[arg(long, env = "OPENAI_API_KEY", global = true, hide_env_values = true,
          help_heading = EMBEDDER_HEADING)]
    openai_api_key: Option<embedders::ApiKey>,
    /// openai: texts per request [default: 64].
    #[arg(long, env = "GOLDSET_EMBED_BATCH_SIZE", global = true, hide_env_values = true,
          help_heading = EMBEDDER_HEADING,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    embed_batch_size: Option<u32>,
    /// openai: requests in flight at once [default: 4].
    #[arg(long, env = "GOLDSET_EMBED_CONCURRENCY", global = true, hide_env_values = true,
          help_heading = EMBEDDER_HEADING,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    embed_concurrency: Option<u32>,
    /// openai: seconds one request may take before it is retried [default: 120].
    #[arg(long, env = "GOLDSET_EMBED_TIMEOUT", global = true, hide_env_values = true,
          help_heading = EMBEDDER_HEADING,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    embed_timeout: Option<u64>,
    /// openai: how long one request keeps being retried after passing failures (429, 5xx,
    /// timeouts, a restarting server), e.g. 90s, 5m [default: 2m].
    #[arg(long, env = "GOLDSET_EMBEDDER_RETRY_WINDOW", global = true, hide_env_values = true,
          help_heading = EMBEDDER_HEADING, value_name = "DURATION",
          value_parser = humantime::parse_duration)]
    embedder_retry_window: Option<std::time::Duration>,
    /// openai: accept answers that name another model than the one asked for (servers that
    /// rename or alias models); by default such an answer is refused.
    #[arg(long, global = true, help_heading = EMBEDDER_HEADING)]
    embedder_allow_model_alias: bool,
    /// No progress bars, no summary line (errors are still printed).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// No progress bars; the summary line stays.
    #[arg(long, global = true)]
    no_progress: bool,
    /// Output for people (text) or for programs (json, on stdout).
    #[arg(long, value_enum, default_value_t = Format::Text, global = true)]
    format: Format,
    /// More log output on stderr (-v info, -vv debug); GOLDSET_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// An application's tables to work on in place: `[mapping]` of the configuration file.
    #[arg(skip)]
    mapping: Option<goldset::store::layout::Layout>,
}

/// The embedder options (ids), and the commands whose help lists them: the others accept them
/// (they are global, so `goldset --embedder X restore` works) but never use them.
const EMBEDDER_SPEC_ARG: &str = "embedder";
const OPENAI_ARGS: &[&str] = &[
    "openai_base_url",
    "openai_api_key",
    "embed_batch_size",
    "embed_concurrency",
    "embed_timeout",
    "embedder_retry_window",
    "embedder_allow_model_alias",
];
/// Commands that build an embedder (all the embedder options apply).
const EMBEDDING_COMMANDS: &[&str] = &["restore", "verify", "reembed", "embed"];
/// Commands that only compare with the `--embedder` spec (no openai: options apply).
const SPEC_COMMANDS: &[&str] = &["load"];

/// The command line's definition: the derived one, with the embedder options left out of the
/// help of the commands that never use them. Parsing, completions and the man page use it.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    // `mut_subcommands` and `mut_args` keep the built command's order of subcommands and
    // arguments, which its key maps index (`mut_subcommand`/`mut_arg` would move one to the end).
    cmd.mut_subcommands(|sub| {
        let name = sub.get_name().to_owned();
        let mut hidden: Vec<&str> = Vec::new();
        if !EMBEDDING_COMMANDS.contains(&name.as_str()) {
            hidden.extend(OPENAI_ARGS);
            if !SPEC_COMMANDS.contains(&name.as_str()) {
                hidden.push(EMBEDDER_SPEC_ARG);
            }
        }
        sub.mut_args(|a| {
            let hide = a.is_hide_set() || hidden.contains(&a.get_id().as_str());
            a.hide(hide)
        })
    })
}

/// Parses `args` (the program name first) with [`command`].
fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
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
    /// Look at an application's database and propose the [mapping] that lets goldset back up,
    /// verify and restore its tables in place (--write adds it to goldset.toml).
    Adopt(adopt::AdoptArgs),
    /// Create the database and its schema (other commands do it too when they need to).
    Init,
    /// Write the dataset to a JSON backup file (and its metadata file), atomically.
    Backup(backup::BackupArgs),
    /// Load a backup into the database in one transaction, embedding every chunk.
    Restore(restore::RestoreArgs),
    /// Check a backup file and, unless --file-only, the database against it.
    Verify(verify::VerifyArgs),
    /// Show what the database holds.
    Status,
    /// Show what the embedding cache holds per model; --prune removes the entries no chunk uses.
    Cache(cache::CacheArgs),
    /// Write a native snapshot (SQLite file or pg_dump archive, embeddings included) and its manifest.
    Dump(dump::DumpArgs),
    /// Load a native snapshot (all or nothing) after checking it against its manifest.
    Load(load::LoadArgs),
    /// Regenerate every chunk's embedding in place with the configured --embedder.
    Reembed(reembed::ReembedArgs),
    /// Print each TEXT's embedding as a JSON array, one per line (no TEXT: JSON strings, one per
    /// line, from stdin).
    Embed(embed::EmbedArgs),
    /// Score retrieval on the golden queries (recall, precision, nDCG, MRR, MAP); --save a
    /// baseline, --check against one.
    Eval(eval::EvalArgs),
    /// Show what changed between two backups, or a backup and the database (`db:`).
    Diff(diff::DiffArgs),
    /// The history of a backup file tracked in git: counts and changes per commit.
    Log(log::LogArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish) on stdout.
    Completions(shell::CompletionsArgs),
    /// Print goldset's man page (roff) on stdout, or write one page per command to --dir.
    Man(shell::ManArgs),
    /// Write a synthetic dataset as a backup file (for benchmarks and trials).
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
}

/// Parses the command line, runs it, and returns the process exit code.
pub fn run() -> i32 {
    let cli = parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit());
    init_logging(cli.global.verbose);
    let out = Output::new(cli.global.format, cli.global.quiet);
    execute(cli, &out)
}

/// Runs a parsed command line into `out` and returns the exit code: 0 ok, 1 bad data or a
/// failed check, 2 usage, I/O or database errors — a failed write to stdout included, except
/// that a closed pipe only ends output early and keeps the command's code.
fn execute(mut cli: Cli, out: &Output) -> i32 {
    let result = match &cli.command {
        // They describe the command line alone: no configuration file can break them.
        Command::Completions(args) => shell::completions(out, args),
        Command::Man(args) => shell::man(out, args),
        _ => config::load(cli.global.config.as_deref()).and_then(|c| {
            cli.global.apply(c);
            dispatch(&cli, out)
        }),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            out.error(&e);
            e.exit_code()
        }
    };
    match out.finish() {
        Ok(()) => code,
        Err(e) => {
            eprintln!("error: {}", OpError::io("stdout")(e));
            2
        }
    }
}

fn dispatch(cli: &Cli, out: &Output) -> Result<i32, OpError> {
    let ctx = Context {
        global: &cli.global,
        out,
    };
    match &cli.command {
        Command::Adopt(args) => adopt::run(&ctx, args),
        Command::Init => init::run(&ctx),
        Command::Backup(args) => backup::run(&ctx, args),
        Command::Restore(args) => restore::run(&ctx, args),
        Command::Verify(args) => verify::run(&ctx, args),
        Command::Status => status::run(&ctx),
        Command::Cache(args) => cache::run(&ctx, args),
        Command::Dump(args) => dump::run(&ctx, args),
        Command::Load(args) => load::run(&ctx, args),
        Command::Reembed(args) => reembed::run(&ctx, args),
        Command::Embed(args) => embed::run(&ctx, args),
        Command::Eval(args) => eval::run(&ctx, args),
        Command::Diff(args) => diff::run(&ctx, args),
        Command::Log(args) => log::run(&ctx, args),
        Command::Generate(args) => generate::run(&ctx, args),
        Command::Completions(_) | Command::Man(_) => unreachable!("run before the configuration"),
    }
}

/// Where the dataset lives when no flag, environment variable or configuration file says.
const DEFAULT_DATABASE_URL: &str = "sqlite:golden.db";
/// PostgreSQL schema when no flag, environment variable or configuration file says.
const DEFAULT_SCHEMA: &str = "public";

impl Global {
    /// Fills what neither a flag nor the environment set from the configuration file (the
    /// accessors below supply the built-in defaults).
    fn apply(&mut self, config: config::Config) {
        self.database_url = self.database_url.take().or(config.database_url);
        self.schema = self.schema.take().or(config.schema);
        self.embedder = self.embedder.take().or(config.embedder);
        self.openai_base_url = self.openai_base_url.take().or(config.openai_base_url);
        self.mapping = config.mapping;
    }

    fn database_url(&self) -> &str {
        self.database_url.as_deref().unwrap_or(DEFAULT_DATABASE_URL)
    }

    fn schema(&self) -> &str {
        self.schema.as_deref().unwrap_or(DEFAULT_SCHEMA)
    }
}

/// What a subcommand's `run` works with: the global options and the output.
struct Context<'a> {
    global: &'a Global,
    out: &'a Output,
}

/// Whether opening the store may create the database.
#[derive(Clone, Copy)]
enum Create {
    Yes,
    No,
}

impl Context<'_> {
    /// Opens the database. `wait`: when another restore holds the write lock, wait for it
    /// (`--wait`, the default) or fail at once (`--no-wait`).
    fn open_store(&self, create: Create, wait: bool) -> Result<Box<dyn Store>, OpError> {
        self.open(store::OpenOptions {
            create: matches!(create, Create::Yes),
            wait_for_lock: wait,
            ..self.open_options()
        })
    }

    /// Opens the database for a command that only reads (an application's database is opened
    /// read-only).
    fn open_existing(&self) -> Result<Box<dyn Store>, OpError> {
        self.open(store::OpenOptions {
            read_only: true,
            ..self.open_options()
        })
    }

    /// Opens the database to look at its catalog only (`adopt`): no migration, no mapping.
    fn open_for_inspection(&self) -> Result<Box<dyn Store>, OpError> {
        self.open(store::OpenOptions {
            inspect: true,
            mapping: None,
            read_only: true,
            ..self.open_options()
        })
    }

    fn open_options(&self) -> store::OpenOptions {
        store::OpenOptions {
            schema: self.global.schema().to_owned(),
            mapping: self.global.mapping.clone(),
            ..Default::default()
        }
    }

    fn open(&self, options: store::OpenOptions) -> Result<Box<dyn Store>, OpError> {
        let url = self.global.database_url();
        if url.trim().is_empty() {
            return Err(OpError::Refused(
                "the database URL is empty (--database-url, DATABASE_URL or database_url in \
                 goldset.toml): give sqlite:PATH or postgres://USER@HOST:PORT/DB"
                    .into(),
            ));
        }
        let started = std::time::Instant::now();
        tracing::info!(url = %store::redact_url(url), create = options.create,
                       read_only = options.read_only, "opening the database");
        let store = store::open(url, &options)?;
        tracing::info!(database = %store.location(),
                       elapsed_ms = started.elapsed().as_millis() as u64, "database open");
        Ok(store)
    }

    /// The configured embedder (`--embedder`, else the default, with a note on stderr when it
    /// first embeds something).
    fn embedder(&self) -> Result<Box<dyn Embedder>, OpError> {
        self.make_embedder(false)
    }

    /// The configured embedder, built only when a text must be embedded (`openai:`: a
    /// restore whose texts are all cached never contacts the server).
    fn lazy_embedder(&self) -> Result<Box<dyn Embedder>, OpError> {
        self.make_embedder(true)
    }

    fn make_embedder(&self, lazy: bool) -> Result<Box<dyn Embedder>, OpError> {
        let g = self.global;
        let settings = embedders::EmbedderSettings {
            openai_base_url: g.openai_base_url.clone(),
            openai_api_key: g.openai_api_key.clone(),
            openai_batch_size: g.embed_batch_size.map(|n| n as usize),
            openai_max_in_flight: g.embed_concurrency.map(|n| n as usize),
            openai_timeout: g.embed_timeout.map(std::time::Duration::from_secs),
            openai_retry_window: g.embedder_retry_window,
            openai_allow_model_alias: g.embedder_allow_model_alias,
            ..Default::default()
        };
        let (spec, notice) = match &g.embedder {
            Some(spec) => (spec.clone(), None),
            None => embedders::default_spec(),
        };
        let started = std::time::Instant::now();
        let embedder = if lazy {
            embedders::from_spec_lazy(&spec, &settings)?
        } else {
            embedders::from_spec(&spec, &settings)?
        };
        tracing::info!(
            spec,
            lazy,
            model = embedder.model_id(),
            dimension = embedder.dimension(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "embedder ready"
        );
        Ok(match notice.filter(|_| !g.quiet) {
            Some(notice) => Box::new(notice::Noticed::new(embedder, notice)),
            None => embedder,
        })
    }

    /// Progress bars on stderr, shown on a terminal for text output without `--quiet` or
    /// `--no-progress`.
    fn progress(&self) -> Bar {
        let g = self.global;
        Bar::new(!g.quiet && !g.no_progress && g.format == Format::Text)
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
    let colour = log_colour(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .without_time()
        .init();
}

/// Whether log lines are coloured: only on a terminal, and never with `NO_COLOR` set to
/// anything but the empty string (no-color.org); log lines redirected to a file stay text.
fn log_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests;
