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
mod progress;
mod reembed;
mod render;
mod restore;
mod status;
mod stdout;
mod verify;

use clap::{Args, Parser, Subcommand, ValueEnum};
use goldset::embed::{self as embedders, Embedder};
use goldset::ops::OpError;
use goldset::store::{self, Store};
use progress::Bar;
use render::Output;
use std::path::PathBuf;

/// Keep a RAG golden dataset safe: git-friendly JSON backups, verify, transactional restore.
#[derive(Debug, Parser)]
#[command(name = "goldset", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
struct Global {
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
    openai_api_key: Option<embedders::ApiKey>,
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
    /// An application's tables to work on in place: `[mapping]` of the configuration file.
    #[arg(skip)]
    mapping: Option<goldset::store::layout::Layout>,
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
    /// Write a synthetic dataset as a backup file (for benchmarks and trials).
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
}

/// Parses the command line, runs it, and returns the process exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    let out = Output::new(cli.global.format, cli.global.quiet);
    execute(cli, &out)
}

/// Runs a parsed command line into `out` and returns the exit code: 0 ok, 1 bad data or a
/// failed check, 2 usage, I/O or database errors — a failed write to stdout included, except
/// that a closed pipe only ends output early and keeps the command's code.
fn execute(mut cli: Cli, out: &Output) -> i32 {
    let result = config::load(cli.global.config.as_deref()).and_then(|c| {
        cli.global.apply(c);
        dispatch(&cli, out)
    });
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
        Ok(store::open(self.global.database_url(), &options)?)
    }

    /// The configured embedder (`--embedder`, else the default with a note on stderr).
    fn embedder(&self) -> Result<Box<dyn Embedder>, OpError> {
        let g = self.global;
        let settings = embedders::EmbedderSettings {
            openai_base_url: g.openai_base_url.clone(),
            openai_api_key: g.openai_api_key.clone(),
            openai_batch_size: g.embed_batch_size.map(|n| n as usize),
            openai_max_in_flight: g.embed_concurrency.map(|n| n as usize),
            openai_timeout: g.embed_timeout.map(std::time::Duration::from_secs),
            ..Default::default()
        };
        let spec = match &g.embedder {
            Some(spec) => spec.clone(),
            None => {
                let (spec, notice) = embedders::default_spec();
                if let Some(notice) = notice.filter(|_| !g.quiet) {
                    eprintln!("note: {notice}");
                }
                spec
            }
        };
        Ok(embedders::from_spec(&spec, &settings)?)
    }

    /// Progress bars on stderr, shown on a terminal for text output without `--quiet`.
    fn progress(&self) -> Bar {
        Bar::new(!self.global.quiet && self.global.format == Format::Text)
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
    // Colour only on a terminal, never with NO_COLOR (log lines redirected to a file stay text).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .without_time()
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("goldset").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// `--wait`/`--no-wait` on every command that takes the write lock; the last one wins.
    #[test]
    fn lock_flags_pair_up_on_every_writing_command() {
        let lock = |args: &[&str]| match parse(args).command {
            Command::Restore(a) => a.lock.wait(),
            Command::Reembed(a) => a.lock.wait(),
            Command::Load(a) => a.lock.wait(),
            Command::Cache(a) => a.lock.wait(),
            other => panic!("{other:?} takes no lock flags"),
        };
        for command in ["restore", "reembed", "load", "cache"] {
            assert!(lock(&[command]), "{command} waits by default");
            assert!(lock(&[command, "--wait"]), "{command} --wait");
            assert!(!lock(&[command, "--no-wait"]), "{command} --no-wait");
            assert!(
                lock(&[command, "--no-wait", "--wait"]),
                "{command}: last wins"
            );
            assert!(
                !lock(&[command, "--wait", "--no-wait"]),
                "{command}: last wins"
            );
        }
    }

    /// The shared groups keep each flag's spelling and default on every command that has it.
    #[test]
    fn shared_flags_keep_their_defaults() {
        use goldset::format::DEFAULT_BACKUP_PATH;
        use goldset::model::StatusFilter;
        let completed = StatusFilter::Only(vec!["completed".into()]);
        match parse(&["backup"]).command {
            Command::Backup(a) => {
                assert_eq!(a.file.file, PathBuf::from(DEFAULT_BACKUP_PATH));
                assert_eq!(a.status.filter(), completed);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["verify", "-f", "x.json", "--status", "a,all"]).command {
            Command::Verify(a) => {
                assert_eq!(a.file.file, PathBuf::from("x.json"));
                assert_eq!(a.status.filter(), StatusFilter::All);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["restore", "--no-cache", "--metadata-file", "m.json"]).command {
            Command::Restore(a) => {
                assert!(!a.cache.use_cache());
                assert_eq!(a.metadata.metadata_file, Some(PathBuf::from("m.json")));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["reembed"]).command {
            Command::Reembed(a) => assert!(a.cache.use_cache()),
            other => panic!("{other:?}"),
        }
    }

    /// Runs `args` in a fresh folder (with an empty configuration file) into `stdout`.
    fn execute_into(dir: &std::path::Path, args: &[&str], stdout: stdout::Stdout) -> i32 {
        let config = dir.join("goldset.toml");
        std::fs::write(&config, "").unwrap();
        let mut argv = vec!["goldset", "--config", config.to_str().unwrap()];
        argv.extend(args);
        let cli = Cli::try_parse_from(&argv).unwrap();
        execute(cli, &Output::with_stdout(Format::Text, false, stdout))
    }

    /// A closed pipe ends output quietly and keeps the command's exit code; a full device is an
    /// I/O error (exit 2). Neither panics.
    #[test]
    fn stdout_failures_map_to_the_exit_contract() {
        use stdout::tests::{enospc, epipe, failing};
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        let (a, b) = (file("a.json"), file("b.json"));
        let generate = |path: &str, seed: &str| {
            let (out, written, _) = failing(usize::MAX, epipe);
            let args = ["generate", "-f", path, "--analyses", "3", "--seed", seed];
            assert_eq!(execute_into(dir.path(), &args, out), 0);
            assert!(String::from_utf8_lossy(&written.borrow()).starts_with("generate: "));
        };
        generate(&a, "1");
        generate(&b, "2");
        let diff = ["diff", a.as_str(), b.as_str()];
        let (out, written, _) = failing(0, epipe);
        assert_eq!(execute_into(dir.path(), &diff, out), 1, "diff's own code");
        assert!(written.borrow().is_empty());
        let (out, _, attempts) = failing(10, epipe);
        assert_eq!(execute_into(dir.path(), &diff, out), 1, "diff's own code");
        assert_eq!(*attempts.borrow(), 2, "no write after the pipe closed");
        let (out, _, _) = failing(0, enospc);
        assert_eq!(execute_into(dir.path(), &diff, out), 2, "a full device");
        let same = ["diff", a.as_str(), a.as_str()];
        let (out, _, _) = failing(0, epipe);
        assert_eq!(execute_into(dir.path(), &same, out), 0);
        let (out, _, _) = failing(0, enospc);
        assert_eq!(execute_into(dir.path(), &same, out), 2);
        let missing = ["verify", "--file-only", "-f", &file("missing.json")];
        let (out, _, _) = failing(0, epipe);
        assert_eq!(
            execute_into(dir.path(), &missing, out),
            2,
            "verify's own error"
        );
    }

    /// Commands that never write keep refusing the lock flags.
    #[test]
    fn read_only_commands_take_no_lock_flags() {
        for command in ["status", "backup", "diff a b", "dump", "verify"] {
            let mut args = vec!["goldset"];
            args.extend(command.split(' '));
            args.push("--no-wait");
            assert!(Cli::try_parse_from(&args).is_err(), "{command} --no-wait");
        }
    }
}
