//! `goldset adopt`: look at an application's database and propose the `[mapping]` that lets
//! goldset work on its tables in place; `--write` puts it into the configuration file.

use super::{config, Context, Format};
use goldset::ops::adopt::{self, Proposal};
use goldset::ops::OpError;
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct AdoptArgs {
    /// Add the mapping to the configuration file (./goldset.toml, or --config PATH).
    #[arg(long)]
    write: bool,
    /// With --write: replace a [mapping] the file already has.
    #[arg(long, requires = "write")]
    force: bool,
}

/// Proposes a mapping; exit 1 when some of it could not be found.
pub fn run(ctx: &Context, args: &AdoptArgs) -> Result<i32, OpError> {
    let mut store = ctx.open_for_inspection()?;
    let catalog = store.catalog()?;
    let proposal = adopt::propose(&catalog);
    let text = mapping_text(&proposal);
    if let (true, Some(_)) = (args.write, &proposal.layout) {
        let path = ctx
            .global
            .config
            .clone()
            .unwrap_or_else(|| config::DEFAULT_CONFIG_FILE.into());
        write_mapping(&path, &text, args.force)?;
        ctx.out
            .adopt(&store.location(), &proposal, None, Some(&path));
    } else {
        let shown = (ctx.global.format == Format::Text).then_some(text.as_str());
        ctx.out.adopt(&store.location(), &proposal, shown, None);
    }
    Ok(if proposal.problems.is_empty() { 0 } else { 1 })
}

/// The proposal as TOML: the notes as comments, then `[mapping]`.
fn mapping_text(p: &Proposal) -> String {
    let mut text = String::new();
    if let Some(what) = &p.recognised {
        text.push_str(&format!("# goldset adopt: recognised {what}\n"));
    }
    for note in &p.notes {
        text.push_str(&format!("# note: {note}\n"));
    }
    if let Some(layout) = &p.layout {
        text.push_str(&layout.to_toml());
    }
    text
}

/// Appends the mapping to the configuration file (creating it), refusing to add a second
/// `[mapping]` unless `force` (then the old one and everything after it is replaced).
fn write_mapping(path: &Path, text: &str, force: bool) -> Result<(), OpError> {
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(OpError::io(path)(e)),
    };
    let start = existing
        .lines()
        .scan(0usize, |offset, line| {
            let at = *offset;
            *offset += line.len() + 1;
            Some((at, line))
        })
        .find(|(_, l)| l.trim_start().starts_with("[mapping"))
        .map(|(at, _)| at);
    let kept = match (start, force) {
        (Some(_), false) => {
            return Err(OpError::Refused(format!(
                "{} already has a [mapping]; review it, or pass --force to replace it",
                path.display()
            )))
        }
        (Some(at), true) => &existing[..at],
        (None, _) => existing.as_str(),
    };
    let mut out = kept.trim_end().to_owned();
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(text);
    goldset::ops::atomic::write_file(path, out.as_bytes()).map_err(OpError::io(path))
}
