//! Reading a 2xx answer: the vectors in input order, checked for count, dimension and model.

use super::error::{shorten, MESSAGE_LIMIT};
use serde::Deserialize;

/// The answer's shape; other fields (`object`, `usage`…) are ignored.
#[derive(Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingItem>,
    /// The model the server says it used; absent from some servers' answers.
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

/// What is wrong with an answer (the caller adds the endpoint).
#[derive(Debug, PartialEq)]
pub(super) enum Problem {
    /// Not the expected JSON, with what was wrong.
    Malformed(String),
    /// Another number of vectors than texts.
    WrongCount { got: usize },
    /// A vector of another length than `expected`.
    Dimension { expected: usize, got: usize },
    /// The answer names another model.
    Model { served: String },
}

/// A parsed answer.
pub(super) struct Answer {
    /// The vectors in input order.
    pub vectors: Vec<Vec<f32>>,
    /// The model the server named, when it is another name than the one asked for but
    /// [`same_model`] did not match it and aliases are allowed.
    pub alias: Option<String>,
}

/// The vectors of a 2xx `body` for `expected` texts asked of `model`: in input order (by
/// `data[].index` when given), all of `dimension` (0: learn it from the first), and from
/// the requested model when the answer names one ([`same_model`]; any name when
/// `allow_alias`).
pub(super) fn parse(
    body: &[u8],
    expected: usize,
    dimension: usize,
    model: &str,
    allow_alias: bool,
) -> Result<Answer, Problem> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let response: EmbeddingResponse = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() || path != "." {
            Problem::Malformed(format!("{path}: {inner}"))
        } else {
            let start = String::from_utf8_lossy(&body[..body.len().min(4 * MESSAGE_LIMIT)]);
            Problem::Malformed(format!(
                "the body is not JSON ({inner}); it starts with {:?}",
                shorten(start.trim())
            ))
        }
    })?;
    let alias = match response.model {
        Some(served) if !same_model(model, &served) => {
            if !allow_alias {
                return Err(Problem::Model { served });
            }
            Some(served)
        }
        _ => None,
    };
    let data = response.data;
    if data.len() != expected {
        return Err(Problem::WrongCount { got: data.len() });
    }
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; expected];
    let indexed = data.iter().filter(|d| d.index.is_some()).count();
    if indexed != 0 && indexed != expected {
        return Err(Problem::Malformed(
            "some items of data have an index, others not".into(),
        ));
    }
    let mut want = dimension;
    for (position, item) in data.into_iter().enumerate() {
        let i = item.index.unwrap_or(position);
        if i >= expected || vectors[i].is_some() {
            return Err(Problem::Malformed(format!(
                "data[{position}].index is {i}: out of range or repeated (expected 0..{expected}, each once)"
            )));
        }
        if item.embedding.iter().any(|x| !x.is_finite()) {
            return Err(Problem::Malformed(format!(
                "data[{position}].embedding has a value that is not a finite 32-bit float"
            )));
        }
        if want == 0 {
            want = item.embedding.len();
        }
        if item.embedding.len() != want {
            return Err(Problem::Dimension {
                expected: want,
                got: item.embedding.len(),
            });
        }
        vectors[i] = Some(item.embedding);
    }
    Ok(Answer {
        vectors: vectors.into_iter().flatten().collect(),
        alias,
    })
}

/// Whether the model a server names is the one asked for. Servers echo the name as asked
/// (OpenAI, vLLM's `--served-model-name`, infinity, Ollama) or give their own id for it
/// (text-embeddings-inference: the Hugging Face id it was started with). The same model is
/// accepted when the names are equal ignoring ASCII case (Hugging Face ids are), when one
/// carries Ollama's default tag `:latest` and the other no tag, and when one has no
/// organisation, or is a folder (TEI started with `--model-id /data/NAME`), and equals the
/// other's name after its last `/` (`bge-small-en-v1.5` for `BAAI/bge-small-en-v1.5`).
/// Anything else is another model.
pub(super) fn same_model(requested: &str, served: &str) -> bool {
    let normal = |name: &str| {
        let name = name.trim().to_ascii_lowercase();
        match name.strip_suffix(":latest") {
            Some(bare) => bare.to_owned(),
            None => name,
        }
    };
    let (requested, served) = (normal(requested), normal(served));
    if requested == served {
        return true;
    }
    let last = |name: &str| name.rsplit('/').next().unwrap_or_default().to_owned();
    let bare = |name: &str| !name.contains('/') || name.starts_with(['/', '.']);
    (bare(&requested) || bare(&served)) && last(&requested) == last(&served)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_that_mean_the_same_model() {
        for (requested, served) in [
            ("text-embedding-3-small", "text-embedding-3-small"),
            ("nomic-embed-text", "nomic-embed-text:latest"),
            ("nomic-embed-text:latest", "nomic-embed-text"),
            ("BAAI/bge-small-en-v1.5", "baai/bge-small-en-v1.5"),
            ("bge-small-en-v1.5", "BAAI/bge-small-en-v1.5"),
            ("BAAI/bge-small-en-v1.5", "/data/bge-small-en-v1.5"),
        ] {
            assert!(same_model(requested, served), "{requested} vs {served}");
        }
        for (requested, served) in [
            ("nope", "all-MiniLM-L6-v2"),
            ("nomic-embed-text:v1.5", "nomic-embed-text"),
            ("BAAI/bge-small-en-v1.5", "BAAI/bge-base-en-v1.5"),
            ("me/bge-small-en-v1.5", "BAAI/bge-small-en-v1.5"),
            ("text-embedding-ada-002", "text-embedding-ada-002-v2"),
        ] {
            assert!(!same_model(requested, served), "{requested} vs {served}");
        }
    }

    #[test]
    fn the_answers_model_must_be_the_one_asked_for_unless_aliases_are_allowed() {
        let body = br#"{"data":[{"index":0,"embedding":[1,0]}],"model":"other"}"#;
        assert_eq!(
            parse(body, 1, 0, "mine", false).err(),
            Some(Problem::Model {
                served: "other".into()
            })
        );
        let answer = parse(body, 1, 0, "mine", true).unwrap();
        assert_eq!(answer.alias.as_deref(), Some("other"));
        assert_eq!(answer.vectors, [[1.0, 0.0]]);
        let unnamed = br#"{"data":[{"embedding":[1,0]}]}"#;
        let answer = parse(unnamed, 1, 2, "mine", false).unwrap();
        assert_eq!((answer.vectors.len(), answer.alias), (1, None));
    }
}
