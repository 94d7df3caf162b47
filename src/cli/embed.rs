//! `goldset embed`: print embeddings as JSON arrays, one per line.

use super::Context;
use goldset::ops::embedding::embed_texts;
use goldset::ops::OpError;
use std::io::BufRead;

/// Texts that `goldset embed` reads from stdin before embedding them.
const EMBED_WINDOW: usize = 1024;

#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// Texts to embed.
    texts: Vec<String>,
}

/// Embeds the texts given, or those on stdin (a JSON string per line), in input order. Stops
/// early when stdout's reader goes away.
pub fn run(ctx: &Context, args: &EmbedArgs) -> Result<i32, OpError> {
    let embedder = ctx.embedder()?;
    let stdout = ctx.out.stdout();
    let print = |texts: &[String]| -> Result<bool, OpError> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        for v in embed_texts(embedder.as_ref(), &refs)? {
            stdout.line(&serde_json::to_string(&v).expect("floats serialize"));
        }
        Ok(stdout.is_open())
    };
    if args.texts.is_empty() {
        for_each_window(std::io::stdin().lock(), EMBED_WINDOW, print)?;
    } else {
        print(&args.texts)?;
    }
    Ok(0)
}

/// Reads one JSON string per line (blank lines skipped) and hands them to `each` in windows of
/// `size` texts, so that a window can be sorted by length while memory stays flat. Stops when
/// `each` returns `false`.
fn for_each_window(
    input: impl BufRead,
    size: usize,
    mut each: impl FnMut(&[String]) -> Result<bool, OpError>,
) -> Result<(), OpError> {
    let mut window = Vec::with_capacity(size);
    for (i, line) in input.lines().enumerate() {
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
        if window.len() == size && !each(&std::mem::take(&mut window))? {
            return Ok(());
        }
    }
    if !window.is_empty() {
        each(&window)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(input: &str, size: usize, stop_after: usize) -> Result<Vec<Vec<String>>, OpError> {
        let mut seen = Vec::new();
        for_each_window(input.as_bytes(), size, |w| {
            seen.push(w.to_vec());
            Ok(seen.len() < stop_after)
        })?;
        Ok(seen)
    }

    #[test]
    fn texts_come_in_windows_in_input_order() {
        let got = windows("\"a\"\n\n\"b\"\n  \n\"c\"\n", 2, usize::MAX).unwrap();
        assert_eq!(got, [vec!["a", "b"], vec!["c"]]);
    }

    #[test]
    fn no_texts_no_window() {
        assert!(windows("\n \n", 2, usize::MAX).unwrap().is_empty());
    }

    #[test]
    fn reading_stops_when_output_is_gone() {
        let got = windows("\"a\"\n\"b\"\n\"c\"\n\"d\"\n\"e\"\n", 2, 1).unwrap();
        assert_eq!(got, [vec!["a", "b"]]);
    }

    #[test]
    fn a_line_that_is_not_a_json_string_is_refused_with_its_number() {
        let e = windows("\"a\"\n\nplain\n", 2, usize::MAX).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("stdin:3: expected a JSON string per line"),
            "{e}"
        );
    }
}
