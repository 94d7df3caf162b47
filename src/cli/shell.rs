//! `goldset completions SHELL` and `goldset man`: generated from the one command-line
//! definition ([`super::command`]), so they never disagree with `--help`.

use super::render::Output;
use clap_complete::Shell;
use goldset::ops::OpError;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(after_help = "Install, for example:\n  \
    goldset completions bash > ~/.local/share/bash-completion/completions/goldset\n  \
    goldset completions zsh > \"${fpath[1]}/_goldset\"\n  \
    goldset completions fish > ~/.config/fish/completions/goldset.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write goldset.1 and one goldset-COMMAND.1 per command into this folder instead.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Prints the completion script.
pub fn completions(out: &Output, args: &CompletionsArgs) -> Result<i32, OpError> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut super::command(), "goldset", &mut script);
    out.stdout()
        .copy_from(script.as_slice())
        .map_err(OpError::io("stdout"))?;
    Ok(0)
}

/// Prints the man page, or writes every page into `--dir`.
pub fn man(out: &Output, args: &ManArgs) -> Result<i32, OpError> {
    let command = super::command();
    if let Some(dir) = &args.dir {
        // goldset.1, then goldset-COMMAND.1 for each command `--help` lists.
        let mut pages = vec![("goldset.1".to_owned(), command.clone())];
        for sub in command.get_subcommands() {
            if !sub.is_hide_set() && sub.get_name() != "help" {
                // The built command names its subcommands `goldset-COMMAND` for display.
                pages.push((format!("goldset-{}.1", sub.get_name()), sub.clone()));
            }
        }
        for (file, page) in pages {
            let path = dir.join(file);
            let mut text = Vec::new();
            clap_mangen::Man::new(page)
                .render(&mut text)
                .and_then(|()| std::fs::write(&path, text))
                .map_err(OpError::io(&path))?;
        }
        out.line(format!("man: pages written to {}", dir.display()));
        return Ok(0);
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .map_err(OpError::io("stdout"))?;
    out.stdout()
        .copy_from(page.as_slice())
        .map_err(OpError::io("stdout"))?;
    Ok(0)
}
