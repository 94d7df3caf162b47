//! `goldset generate` (hidden): a synthetic dataset as a backup file, for benchmarks and trials.

use super::Context;
use goldset::format::metadata_path_for;
use goldset::format::writer::metadata_file_content;
use goldset::model::Counts;
use goldset::ops::atomic::AtomicFile;
use goldset::ops::OpError;
use goldset::synthetic::{write_backup, Spec};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
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

/// Writes the dataset and its metadata file.
pub fn run(ctx: &Context, args: &GenerateArgs) -> Result<i32, OpError> {
    let spec = Spec {
        analyses: args.analyses,
        chunks_per_analysis: args.chunks_per_analysis,
        seed: args.seed,
    };
    let counts = write_files(spec, &args.file).map_err(OpError::io(&args.file))?;
    ctx.out.line(format!(
        "generate: {} written ({counts})",
        args.file.display()
    ));
    Ok(0)
}

/// The backup (replaced atomically), then its metadata file beside it.
fn write_files(spec: Spec, file: &Path) -> std::io::Result<Counts> {
    let mut backup = AtomicFile::create(file)?;
    let counts = write_backup(spec, BufWriter::new(backup.file()))?;
    backup.commit()?;
    std::fs::write(metadata_path_for(file), metadata_file_content(&counts)?)?;
    Ok(counts)
}
