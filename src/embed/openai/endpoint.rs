//! Where embedding requests go, from a base URL as users paste it, and how URLs are shown
//! (without any `user:password@` part).

use super::OpenAiError;
use url::Url;

/// The endpoints to try for a base URL, in order; the first that is not a 404 is used.
///
/// * A URL whose path ends in `/embeddings` is used as is (`http://host:7997/embeddings`).
/// * Another path gets `/embeddings` appended (`https://api.openai.com/v1`,
///   `http://proxy/openai`).
/// * A bare host (`http://gpu-box:8080`) tries `/v1/embeddings` first (OpenAI,
///   text-embeddings-inference, vLLM, Ollama, LiteLLM) and then `/embeddings` (infinity's
///   default, mounted at the root), once, during the dimension probe.
///
/// Only `http` and `https`, with a host, without a query string or fragment.
pub fn candidates(base_url: &str) -> Result<Vec<Url>, OpenAiError> {
    let given = base_url.trim();
    let bad = |reason| OpenAiError::BadBaseUrl {
        url: redact_str(given),
        reason,
    };
    if given.chars().any(char::is_whitespace) || given.contains(['?', '#']) {
        return Err(bad(
            "it must not contain a query string, a fragment or spaces",
        ));
    }
    let url = Url::parse(given).map_err(|_| bad("it is not a URL with a host"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("it must start with http:// or https://"));
    }
    // `url` reads `http:///v1` as the host `v1`: refuse an empty authority as written.
    let after_scheme = &given[url.scheme().len()..];
    if !after_scheme.starts_with("://") || after_scheme[3..].starts_with('/') {
        return Err(bad("it has no host"));
    }
    if url.host_str().unwrap_or_default().is_empty() {
        return Err(bad("it has no host"));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    let with_path = |p: &str| {
        let mut u = url.clone();
        u.set_path(p);
        u
    };
    Ok(if path.ends_with("/embeddings") {
        vec![with_path(&path)]
    } else if path.is_empty() {
        vec![with_path("/v1/embeddings"), with_path("/embeddings")]
    } else {
        vec![with_path(&format!("{path}/embeddings"))]
    })
}

/// A URL with any `user:password@` part replaced by `***@`.
pub fn redact(url: &Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    // Both fail only for URLs that cannot have credentials (`mailto:`), which have none.
    let _ = shown.set_password(None);
    let _ = shown.set_username("***");
    shown.to_string()
}

/// [`redact`] for text that may not parse as a URL: then everything before its last `@`
/// (after the scheme) is hidden.
pub fn redact_str(text: &str) -> String {
    match Url::parse(text) {
        Ok(url) => redact(&url),
        Err(_) => match text.rfind('@') {
            Some(at) => {
                let start = text.find("://").map_or(0, |i| i + 3).min(at);
                format!("{}***{}", &text[..start], &text[at..])
            }
            None => text.to_owned(),
        },
    }
}

/// A redirect's `Location` (absolute or relative to `endpoint`), shown without credentials.
pub fn location(endpoint: &Url, value: &str) -> String {
    match endpoint.join(value) {
        Ok(url) => redact(&url),
        Err(_) => redact_str(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(base: &str) -> Vec<String> {
        candidates(base)
            .unwrap_or_else(|e| panic!("{base}: {e}"))
            .iter()
            .map(Url::to_string)
            .collect()
    }

    #[test]
    fn base_urls_as_pasted() {
        for (base, endpoint) in [
            (
                "https://api.openai.com/v1",
                "https://api.openai.com/v1/embeddings",
            ),
            (
                "https://api.openai.com/v1/",
                "https://api.openai.com/v1/embeddings",
            ),
            (
                "http://gpu-box:8080/v1/embeddings",
                "http://gpu-box:8080/v1/embeddings",
            ),
            (
                "http://gpu-box:8080/v1/embeddings/",
                "http://gpu-box:8080/v1/embeddings",
            ),
            (
                "http://infinity:7997/embeddings",
                "http://infinity:7997/embeddings",
            ),
            ("  http://proxy/openai ", "http://proxy/openai/embeddings"),
            ("HTTP://Host:1/v1", "http://host:1/v1/embeddings"),
        ] {
            assert_eq!(shown(base), [endpoint], "{base}");
        }
    }

    #[test]
    fn a_bare_host_tries_v1_then_the_root() {
        for (base, first, second) in [
            (
                "https://api.openai.com",
                "https://api.openai.com/v1/embeddings",
                "https://api.openai.com/embeddings",
            ),
            (
                "http://localhost:11434/",
                "http://localhost:11434/v1/embeddings",
                "http://localhost:11434/embeddings",
            ),
        ] {
            assert_eq!(shown(base), [first, second], "{base}");
        }
    }

    #[test]
    fn unusable_base_urls_are_refused() {
        for bad in [
            "localhost:11434",
            "ftp://x/v1",
            "http://",
            "http:///v1",
            "http://x/v1?a=b",
            "http://x/v1#top",
            "http://x/a b",
            "",
        ] {
            assert!(candidates(bad).is_err(), "{bad:?}");
        }
        let e = candidates("gopher://user:secret@host/v1")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn userinfo_is_redacted() {
        assert_eq!(redact_str("https://u:p@h:1/v1"), "https://***@h:1/v1");
        assert_eq!(redact_str("https://h/a@b"), "https://h/a@b");
        assert_eq!(redact_str("no-scheme"), "no-scheme");
        assert_eq!(redact_str("http://u:p@"), "http://***@");
        let endpoint = Url::parse("https://h/v1/embeddings").unwrap();
        assert_eq!(
            location(&endpoint, "https://k:s@elsewhere/v1"),
            "https://***@elsewhere/v1"
        );
        assert_eq!(
            location(&endpoint, "/v2/embeddings"),
            "https://h/v2/embeddings"
        );
    }
}
