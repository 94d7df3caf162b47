//! What goes wrong with an OpenAI-compatible endpoint, and the server's own reason read out of
//! an error body of any common shape, without the texts the server may echo back.

use super::ApiKey;
use std::time::Duration;

/// Server messages shown in errors are cut to this many characters.
pub(super) const MESSAGE_LIMIT: usize = 300;
/// Validation errors of a FastAPI list shown before "and N more".
const DETAIL_ITEMS_SHOWN: usize = 3;
/// Echoed inputs shorter than this are left in messages (replacing them would garble words).
const SHORTEST_HIDDEN_INPUT: usize = 12;
/// Where the key comes from, for messages.
const KEY_SOURCE: &str = "OPENAI_API_KEY or --openai-api-key";
/// Where the base URL comes from, for messages.
pub(super) const URL_SOURCE: &str = "OPENAI_BASE_URL or --openai-base-url";

/// Why the `openai:` embedder could not be built or could not embed. Messages name the
/// endpoint (without any user:password part) and never contain the API key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenAiError {
    /// The base URL cannot be used.
    #[error("invalid base URL {url:?} ({URL_SOURCE}): {reason}")]
    BadBaseUrl {
        /// The URL as given (user:password part removed).
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The server refused the key (401, 403) or wanted one that was not given.
    #[error(
        "{endpoint} refused {} ({status}{}); set a valid key with {KEY_SOURCE}",
        if *key_sent { "the API key" } else { "the request without an API key" },
        colon(message)
    )]
    Unauthorized {
        /// The endpoint.
        endpoint: String,
        /// 401 or 403.
        status: u16,
        /// The server's message (scrubbed of the key, shortened).
        message: String,
        /// Whether a key was sent at all.
        key_sent: bool,
    },
    /// 404: no such model at this endpoint, or no such endpoint.
    #[error(
        "{endpoint} answered 404 Not Found for model {model:?}{}{}: the model does not exist there \
         (check the name after openai:) or the base URL is wrong (check {URL_SOURCE}; \
         most servers serve …/v1/embeddings, infinity serves …/embeddings)",
        colon(message),
        also_tried.as_deref().map(|t| format!(" (also tried {t})")).unwrap_or_default()
    )]
    NotFound {
        /// The endpoint.
        endpoint: String,
        /// The model asked for.
        model: String,
        /// The server's message, if any.
        message: String,
        /// The other endpoint tried for a bare host, with its answer.
        also_tried: Option<String>,
    },
    /// The answer names another model than the one asked for.
    #[error(
        "{endpoint} answered with model {served:?} when {requested:?} was asked for; no vectors \
         were used. Name the model as the server does (openai:{served}) so that stored \
         embeddings say which model made them"
    )]
    ModelMismatch {
        /// The endpoint.
        endpoint: String,
        /// The model asked for.
        requested: String,
        /// The model the server says it used.
        served: String,
    },
    /// Another 4xx: the server's own reason.
    #[error("{endpoint} rejected the request ({status}){}", colon(message))]
    Rejected {
        /// The endpoint.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// A 3xx: goldset does not follow redirects (a POST body and a key should not travel on).
    #[error(
        "{endpoint} redirects ({status}) to {location}; give the final address in {URL_SOURCE}"
    )]
    Redirected {
        /// The endpoint.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The `Location` header.
        location: String,
    },
    /// Transient failures on every attempt.
    #[error("{endpoint}: gave up after {attempts} attempts in {:.1} s; the last: {last}", elapsed.as_secs_f64())]
    GaveUp {
        /// The endpoint.
        endpoint: String,
        /// Attempts made.
        attempts: u32,
        /// Time from the first attempt to giving up.
        elapsed: Duration,
        /// What went wrong the last time.
        last: String,
    },
    /// A failure that retrying cannot fix (unknown host, TLS, a bad header…).
    #[error("{endpoint}: {reason}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// A 2xx answer that is not the expected JSON.
    #[error("{endpoint} sent a malformed answer: {reason}")]
    Malformed {
        /// The endpoint.
        endpoint: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The answer had another number of vectors than the request had texts.
    #[error("{endpoint} returned {got} vectors for {expected} texts")]
    WrongCount {
        /// The endpoint.
        endpoint: String,
        /// Texts sent.
        expected: usize,
        /// Vectors received.
        got: usize,
    },
    /// A vector of another dimension than the model's first answer.
    #[error(
        "model {model} returned a vector of {got} dimensions where {expected} were expected \
         (learnt from its first answer): is another model being served under that name?"
    )]
    DimensionMismatch {
        /// The model id.
        model: String,
        /// The model's dimension.
        expected: usize,
        /// What this answer had.
        got: usize,
    },
}

impl OpenAiError {
    /// A 404 that also names `other`, the 404 of the next endpoint tried.
    pub(super) fn also_tried(self, other: OpenAiError) -> OpenAiError {
        match (self, other) {
            (
                OpenAiError::NotFound {
                    endpoint,
                    model,
                    message,
                    ..
                },
                OpenAiError::NotFound {
                    endpoint: other,
                    message: other_message,
                    ..
                },
            ) => OpenAiError::NotFound {
                endpoint,
                model,
                message,
                also_tried: Some(format!("{other}: 404{}", colon(&other_message))),
            },
            (first, _) => first,
        }
    }
}

/// `": message"`, or nothing for an empty message.
pub(super) fn colon(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// The reason in an error body, ready to show.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ServerReason {
    /// One line, at most [`MESSAGE_LIMIT`] characters, without the key or the echoed inputs.
    pub text: String,
    /// The server says the request or one of its texts is too large (too long, too many…).
    pub too_large: bool,
}

/// Reads the reason out of an error body of any of the shapes the common servers send:
/// OpenAI and newer vLLM `{"error": {"message"}}`; text-embeddings-inference
/// `{"error": "…", "error_type"}`; Ollama `{"error": "…"}`; older vLLM
/// `{"object": "error", "message"}`; FastAPI (infinity) `{"detail": "…"}` or a 422's
/// `{"detail": [{"loc", "msg", "type", "input"}…]}`, shown as `loc: msg` without `input`.
/// Another body is shown as text. The key and any of `inputs` the server echoes are removed
/// before the text is cut, so the reason comes first and what is cut is what remains.
pub(super) fn server_reason(body: &[u8], key: Option<&ApiKey>, inputs: &[&str]) -> ServerReason {
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let (text, typed_too_large) = match json.as_ref().and_then(reason_of_json) {
        Some(found) => found,
        None => (
            String::from_utf8_lossy(&body[..body.len().min(4 * MESSAGE_LIMIT)]).into_owned(),
            false,
        ),
    };
    let text = hide_inputs(&scrub(text.trim(), key), inputs);
    ServerReason {
        too_large: typed_too_large || says_too_large(&text),
        text: shorten(&text),
    }
}

/// The reason in a JSON error body, and whether a validation error's type says "too long".
fn reason_of_json(v: &serde_json::Value) -> Option<(String, bool)> {
    let string = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
    if let Some(message) = string(v.pointer("/error/message")) {
        return Some((message, false));
    }
    if let Some(message) = string(v.get("error")) {
        return Some((message, false));
    }
    if let Some(message) = string(v.get("message")) {
        return Some((message, false));
    }
    match v.get("detail")? {
        serde_json::Value::String(s) => Some((s.clone(), false)),
        serde_json::Value::Array(items) => {
            let mut too_large = false;
            let mut shown: Vec<String> = Vec::new();
            for item in items {
                let kind = item.get("type").and_then(|t| t.as_str()).unwrap_or("");
                too_large |= kind.contains("too_long") || kind.contains("too_many");
                let msg = item.get("msg").and_then(|m| m.as_str()).unwrap_or(kind);
                let loc: Vec<String> = item
                    .get("loc")
                    .and_then(|l| l.as_array())
                    .map(|l| {
                        l.iter()
                            .map(|p| match p {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .skip_while(|p| p == "body")
                            .collect()
                    })
                    .unwrap_or_default();
                let line = if loc.is_empty() {
                    msg.to_owned()
                } else {
                    format!("{}: {msg}", loc.join("."))
                };
                if shown.len() < DETAIL_ITEMS_SHOWN {
                    shown.push(line);
                }
            }
            let mut text = shown.join("; ");
            if items.len() > shown.len() {
                text.push_str(&format!(" (and {} more)", items.len() - shown.len()));
            }
            Some((text, too_large))
        }
        _ => None,
    }
}

/// Whether a reason says the request is too large (too many texts, a text too long).
fn says_too_large(text: &str) -> bool {
    let lower = text.to_lowercase();
    [
        "too long",
        "too large",
        "too many",
        "at most",
        "less than",
        "maximum",
        "exceed",
        "batch size",
    ]
    .iter()
    .any(|phrase| lower.contains(phrase))
}

/// `text` with the API key (should a server echo it) replaced.
pub(super) fn scrub(text: &str, key: Option<&ApiKey>) -> String {
    match key {
        Some(key) if key.expose().len() >= 4 => text.replace(key.expose(), "<redacted>"),
        _ => text.to_owned(),
    }
}

/// `text` with every echoed input (of at least [`SHORTEST_HIDDEN_INPUT`] characters) replaced.
fn hide_inputs(text: &str, inputs: &[&str]) -> String {
    let mut text = text.to_owned();
    for input in inputs {
        if input.chars().count() >= SHORTEST_HIDDEN_INPUT && text.contains(input) {
            text = text.replace(input, "<input text>");
        }
    }
    text
}

/// At most [`MESSAGE_LIMIT`] characters, on one line.
pub(super) fn shorten(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match one_line.char_indices().nth(MESSAGE_LIMIT) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// The TLS failure inside a transport I/O error, as a reason to show: rustls reports a refused
/// certificate, or a peer that does not speak TLS, as an I/O error of the stream. Retrying
/// cannot fix those (a restarting server refuses or drops connections instead).
pub(super) fn tls_failure(e: &std::io::Error) -> Option<String> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(format!("TLS: {tls}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_are_told_from_other_io_errors() {
        let refused = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(
            tls_failure(&refused).as_deref(),
            Some("TLS: invalid peer certificate: UnknownIssuer")
        );
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(tls_failure(&reset), None);
    }

    /// An `https://` endpoint whose server does not speak TLS (or whose certificate is refused)
    /// fails at once with the TLS reason, after one connection: no two minutes of retries.
    #[test]
    fn a_tls_failure_is_not_retried() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for socket in listener.incoming() {
                let Ok(mut socket) = socket else { return };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut hello = [0u8; 5];
                let _ = socket.read_exact(&mut hello);
                let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            }
        });
        let settings = crate::embed::EmbedderSettings {
            openai_base_url: Some(format!("https://127.0.0.1:{port}/v1/embeddings")),
            openai_retry_base: Some(Duration::from_millis(1)),
            openai_retry_max_delay: Some(Duration::from_millis(2)),
            ..Default::default()
        };
        let e = super::super::OpenAiEmbedder::connect("m", &settings).unwrap_err();
        assert!(
            matches!(&e, OpenAiError::Unreachable { reason, .. } if reason.starts_with("TLS: ")),
            "{e}"
        );
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "{e}");
    }

    fn reason(body: &str) -> ServerReason {
        server_reason(body.as_bytes(), None, &[])
    }

    #[test]
    fn messages_are_shortened_to_one_line() {
        let long = "é".repeat(1000);
        let s = shorten(&long);
        assert_eq!(s.chars().count(), MESSAGE_LIMIT + 1);
        assert_eq!(shorten("a\nb"), "a b");
    }

    #[test]
    fn every_common_error_shape_gives_its_reason() {
        for (body, text, too_large) in [
            (
                r#"{"error":{"message":"Invalid model","type":"invalid_request_error"}}"#,
                "Invalid model",
                false,
            ),
            (
                r#"{"error":"Input validation error: `inputs` must have less than 512 tokens. Given: 600","error_type":"Validation"}"#,
                "Input validation error: `inputs` must have less than 512 tokens. Given: 600",
                true,
            ),
            (
                r#"{"error":"model \"x\" not found, try pulling it first"}"#,
                "model \"x\" not found, try pulling it first",
                false,
            ),
            (
                r#"{"object":"error","message":"The model `y` does not exist.","type":"NotFoundError","code":404}"#,
                "The model `y` does not exist.",
                false,
            ),
            (r#"{"detail":"Not Found"}"#, "Not Found", false),
            ("upstream connect error", "upstream connect error", false),
        ] {
            assert_eq!(
                reason(body),
                ServerReason {
                    text: text.to_owned(),
                    too_large
                },
                "{body}"
            );
        }
    }

    #[test]
    fn a_fastapi_validation_list_shows_locations_and_messages_without_the_input() {
        let input = "x".repeat(200_000);
        let item = |i: usize| {
            serde_json::json!({
                "type": "string_too_long",
                "loc": ["body", "input", i],
                "msg": "String should have at most 122880 characters",
                "input": input,
                "ctx": {"max_length": 122880},
            })
        };
        let body = serde_json::json!({"detail": (0..5).map(item).collect::<Vec<_>>()}).to_string();
        let r = server_reason(body.as_bytes(), None, &[input.as_str()]);
        assert!(r.too_large);
        assert!(
            r.text
                .starts_with("input.0: String should have at most 122880 characters; input.1: "),
            "{}",
            r.text
        );
        assert!(r.text.ends_with("(and 2 more)"), "{}", r.text);
        assert!(!r.text.contains("xxxx"), "{}", r.text);
    }

    #[test]
    fn echoed_inputs_and_keys_are_removed_before_cutting() {
        let text = "a chunk of the golden dataset that the server echoes back";
        let key = ApiKey::new("sk-secret-key");
        let message = format!("bad input {text:?} with key sk-secret-key: reason at the end");
        let body = serde_json::json!({ "error": message }).to_string();
        let r = server_reason(body.as_bytes(), Some(&key), &[text, "a"]);
        assert_eq!(
            r.text,
            "bad input \"<input text>\" with key <redacted>: reason at the end"
        );
        // A body that is not JSON too.
        let r = server_reason(message.as_bytes(), Some(&key), &[text]);
        assert!(
            !r.text.contains(text) && !r.text.contains("sk-secret"),
            "{}",
            r.text
        );
    }
}
