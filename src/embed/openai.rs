//! `openai:MODEL` — any OpenAI-compatible `POST /v1/embeddings` endpoint: OpenAI itself,
//! Ollama, text-embeddings-inference, vLLM, LiteLLM… This is the only module that speaks HTTP.
//!
//! * **Requests**: `{"model": MODEL, "input": [texts…], "encoding_format": "float"}` with
//!   `Authorization: Bearer KEY` when a key is configured; the answer's `data[].embedding` is
//!   put back in input order by `data[].index`.
//! * **Batching**: [`Embedder::embed`] splits its texts into requests of at most
//!   `batch_size` texts and keeps up to `max_in_flight` of them in flight at once (scoped
//!   threads sharing one connection pool; a semaphore bounds the total even across concurrent
//!   callers). A request the server refuses as too large (413) is halved, and later requests
//!   use the smaller size.
//! * **Retries**: 408, 425, 429, 5xx, timeouts and broken connections are retried with
//!   exponential backoff and jitter (base 0.5 s, doubling, capped at 30 s, 6 attempts in all),
//!   or after the server's `Retry-After` / `retry-after-ms` (seconds or an HTTP date, capped at
//!   60 s). Anything else fails at once with an [`OpenAiError`] that says what to fix: a refused
//!   key (401/403), an unknown model or endpoint (404), the server's own message (other 4xx),
//!   a malformed body, the wrong number of vectors or a dimension that changed.
//! * **Dimension**: learnt at construction from one small probe request, which also surfaces a
//!   wrong URL, key or model before a restore opens its transaction.
//! * **Secrets**: the key lives in an [`ApiKey`], whose `Debug` is redacted; it appears in no
//!   error or log line, and server messages are scrubbed of it before they are shown.

use super::{EmbedError, Embedder, EmbedderSettings};
use serde::Deserialize;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Base URL used when neither `--openai-base-url` nor `OPENAI_BASE_URL` is set.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Texts per request unless configured (`--embed-batch-size`).
pub const DEFAULT_BATCH_SIZE: usize = 64;
/// Requests in flight at once unless configured (`--embed-concurrency`).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// How long one request may take, from connecting to the last byte (`--embed-timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Attempts per request, the first included, before giving up on a transient failure.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;
/// Backoff before the first retry; it doubles with each further one.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(500);
/// Longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest wait a server's `Retry-After` can impose.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Largest response body read (a batch of 64 × 3072-dimension vectors is about 4 MiB).
const MAX_RESPONSE_BYTES: u64 = 256 << 20;
/// Server messages shown in errors are cut to this many characters.
const MESSAGE_LIMIT: usize = 300;
/// The text of the dimension probe.
const PROBE_TEXT: &str = "goldset dimension probe";
/// Where the key comes from, for messages.
const KEY_SOURCE: &str = "OPENAI_API_KEY or --openai-api-key";
/// Where the base URL comes from, for messages.
const URL_SOURCE: &str = "OPENAI_BASE_URL or --openai-base-url";

/// An API key. Its `Debug` output is redacted and it has no `Display`, so it cannot end up in a
/// message or a log line by accident; [`ApiKey::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key (surrounding whitespace, such as a newline from a key file, is dropped).
    pub fn new(key: impl Into<String>) -> Self {
        let key: String = key.into();
        ApiKey(key.trim().to_owned())
    }

    /// The key itself, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        ApiKey::new(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> Self {
        ApiKey::new(key)
    }
}

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
        "{endpoint} answered 404 Not Found for model {model:?}{}: the model does not exist there \
         (check the name after openai:) or the base URL is wrong (check {URL_SOURCE}; \
         it should end in /v1 for most servers)",
        colon(message)
    )]
    NotFound {
        /// The endpoint.
        endpoint: String,
        /// The model asked for.
        model: String,
        /// The server's message, if any.
        message: String,
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

fn colon(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// The endpoint of a base URL as users paste them: `https://api.openai.com/v1`,
/// `http://localhost:11434/v1/`, `http://gpu-box:8080` (no path: `/v1` is added), or the full
/// `…/v1/embeddings`. A base with another path (`http://proxy/openai`) is used as given, with
/// `/embeddings` appended. Only `http` and `https`; no query string.
pub fn endpoint_url(base_url: &str) -> Result<String, OpenAiError> {
    let bad = |reason| OpenAiError::BadBaseUrl {
        url: redact_userinfo(base_url.trim()),
        reason,
    };
    let mut base = base_url.trim();
    let lower = base.to_ascii_lowercase();
    let rest_at = if lower.starts_with("http://") {
        7
    } else if lower.starts_with("https://") {
        8
    } else {
        return Err(bad("it must start with http:// or https://"));
    };
    if base.contains(['?', '#']) || base.chars().any(char::is_whitespace) {
        return Err(bad(
            "it must not contain a query string, a fragment or spaces",
        ));
    }
    base = base.trim_end_matches('/');
    if let Some(stripped) = base.strip_suffix("/embeddings") {
        base = stripped.trim_end_matches('/');
    }
    let authority = &base[rest_at.min(base.len())..];
    if authority.is_empty() || authority.starts_with('/') {
        return Err(bad("it has no host"));
    }
    if authority.contains('/') {
        Ok(format!("{base}/embeddings"))
    } else {
        Ok(format!("{base}/v1/embeddings"))
    }
}

/// A URL with any `user:password@` part replaced by `***@`.
fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &url[scheme_end + at..]),
        None => url.to_owned(),
    }
}

/// A counting semaphore bounding the requests in flight.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

struct Permit<'a>(&'a Slots);

impl Slots {
    fn new(n: usize) -> Self {
        Slots {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// How one attempt failed.
enum Failure {
    /// Worth another attempt, after `retry_after` when the server said so.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 413: too many texts in one request.
    TooLarge(String),
    /// Retrying will not help.
    Fatal(OpenAiError),
}

/// Why a request produced no vectors.
enum RequestError {
    Failed(OpenAiError),
    /// Another request of the same call failed first; this one stopped retrying.
    Cancelled,
}

impl From<OpenAiError> for RequestError {
    fn from(e: OpenAiError) -> Self {
        RequestError::Failed(e)
    }
}

/// The answer's shape; other fields (`object`, `model`, `usage`…) are ignored.
#[derive(Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

/// See the module documentation.
pub struct OpenAiEmbedder {
    agent: ureq::Agent,
    /// The URL requests go to.
    endpoint: String,
    /// The same for messages: without any user:password part.
    shown: String,
    model: String,
    model_id: String,
    key: Option<ApiKey>,
    dimension: usize,
    /// Texts per request; lowered when the server answers 413.
    batch_size: AtomicUsize,
    max_in_flight: usize,
    slots: Slots,
    timeout: Duration,
    max_attempts: u32,
    retry_base: Duration,
}

impl fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("endpoint", &self.shown)
            .field("model", &self.model)
            .field("key", &self.key)
            .field("dimension", &self.dimension)
            .field("batch_size", &self.batch_size.load(Ordering::Relaxed))
            .field("max_in_flight", &self.max_in_flight)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl OpenAiEmbedder {
    /// Connects to the endpoint `settings` name (or [`DEFAULT_BASE_URL`]) for `model`, and
    /// learns the model's dimension with one probe request (retried like any other).
    pub fn connect(model: &str, settings: &EmbedderSettings) -> Result<Self, OpenAiError> {
        let base = settings
            .openai_base_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or(DEFAULT_BASE_URL);
        let endpoint = endpoint_url(base)?;
        let max_in_flight = settings
            .openai_max_in_flight
            .unwrap_or(DEFAULT_MAX_IN_FLIGHT)
            .max(1);
        let timeout = settings
            .openai_timeout
            .filter(|t| !t.is_zero())
            .unwrap_or(DEFAULT_TIMEOUT);
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .max_redirects(0)
            .max_redirects_will_error(false)
            .max_idle_connections_per_host(max_in_flight)
            .user_agent(format!("goldset/{}", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build()
            .into();
        let mut embedder = OpenAiEmbedder {
            agent,
            shown: redact_userinfo(&endpoint),
            endpoint,
            model: model.to_owned(),
            model_id: format!("openai:{model}"),
            key: settings
                .openai_api_key
                .clone()
                .filter(|k| !k.expose().is_empty()),
            dimension: 0,
            batch_size: AtomicUsize::new(
                settings
                    .openai_batch_size
                    .unwrap_or(DEFAULT_BATCH_SIZE)
                    .max(1),
            ),
            max_in_flight,
            slots: Slots::new(max_in_flight),
            timeout,
            max_attempts: settings
                .openai_max_attempts
                .unwrap_or(DEFAULT_MAX_ATTEMPTS)
                .max(1),
            retry_base: settings.openai_retry_base.unwrap_or(DEFAULT_RETRY_BASE),
        };
        let probe = embedder.request(&[PROBE_TEXT], &AtomicBool::new(false));
        let vector = match probe {
            Ok(mut vectors) => vectors.pop().unwrap_or_default(),
            Err(RequestError::Failed(e)) => return Err(e),
            Err(RequestError::Cancelled) => {
                return Err(embedder.malformed("the probe request was cancelled"))
            }
        };
        if vector.is_empty() {
            return Err(embedder.malformed("the model returned an empty vector"));
        }
        embedder.dimension = vector.len();
        tracing::debug!(
            endpoint = %embedder.shown,
            model = %embedder.model,
            dimension = embedder.dimension,
            "openai embedder ready"
        );
        Ok(embedder)
    }

    /// One request's texts, with retries; splits itself when the server answers 413.
    fn request(&self, texts: &[&str], cancel: &AtomicBool) -> Result<Vec<Vec<f32>>, RequestError> {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let failure = match self.attempt(texts) {
                Ok(vectors) => return Ok(vectors),
                Err(failure) => failure,
            };
            match failure {
                Failure::Fatal(e) => return Err(e.into()),
                Failure::TooLarge(message) => {
                    if texts.len() <= 1 {
                        return Err(OpenAiError::Rejected {
                            endpoint: self.shown.clone(),
                            status: 413,
                            message: format!(
                                "a single text is too large for the server: {message}"
                            ),
                        }
                        .into());
                    }
                    let smaller = texts.len() / 2;
                    let previous = self.batch_size.fetch_min(smaller, Ordering::Relaxed);
                    if previous > smaller {
                        tracing::warn!(
                            "{} refused {} texts in one request as too large (413); sending at most {smaller} \
                             (set --embed-batch-size to start there)",
                            self.shown,
                            texts.len()
                        );
                    }
                    let mut vectors = Vec::with_capacity(texts.len());
                    for part in texts.chunks(smaller) {
                        vectors.extend(self.request(part, cancel)?);
                    }
                    return Ok(vectors);
                }
                Failure::Transient {
                    reason,
                    retry_after,
                } => {
                    if attempt >= self.max_attempts {
                        return Err(OpenAiError::GaveUp {
                            endpoint: self.shown.clone(),
                            attempts: attempt,
                            elapsed: started.elapsed(),
                            last: reason,
                        }
                        .into());
                    }
                    if cancel.load(Ordering::Relaxed) {
                        return Err(RequestError::Cancelled);
                    }
                    let delay = retry_after
                        .map(|d| d.min(MAX_RETRY_AFTER))
                        .unwrap_or_else(|| backoff(self.retry_base, attempt));
                    tracing::warn!(
                        "{}: {reason}; attempt {} of {} in {:.1} s",
                        self.shown,
                        attempt + 1,
                        self.max_attempts,
                        delay.as_secs_f64()
                    );
                    std::thread::sleep(delay);
                    attempt += 1;
                }
            }
        }
    }

    /// One HTTP exchange.
    fn attempt(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Failure> {
        let body = serde_json::json!({
            "model": self.model,
            "input": texts,
            "encoding_format": "float",
        });
        let body = serde_json::to_vec(&body).expect("strings serialize");
        tracing::debug!(endpoint = %self.shown, texts = texts.len(), "embedding request");
        let mut request = self
            .agent
            .post(&self.endpoint)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json");
        if let Some(key) = &self.key {
            request = request.header("Authorization", format!("Bearer {}", key.expose()));
        }
        let mut response = request.send(&body[..]).map_err(|e| self.transport(e))?;
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| self.transport(e))?;
        let code = status.as_u16();
        if status.is_success() {
            return self.parse(&body, texts.len()).map_err(Failure::Fatal);
        }
        let message = self.server_message(&body);
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let endpoint = self.shown.clone();
        Err(match code {
            401 | 403 => Failure::Fatal(OpenAiError::Unauthorized {
                endpoint,
                status: code,
                message,
                key_sent: self.key.is_some(),
            }),
            404 => Failure::Fatal(OpenAiError::NotFound {
                endpoint,
                model: self.model.clone(),
                message,
            }),
            413 => Failure::TooLarge(message),
            408 | 425 | 429 | 500..=599 => Failure::Transient {
                reason: format!(
                    "{code} {}{}",
                    status.canonical_reason().unwrap_or("error"),
                    colon(&message)
                ),
                retry_after: retry_after(
                    header("retry-after-ms").as_deref(),
                    header("retry-after").as_deref(),
                    time::OffsetDateTime::now_utc(),
                ),
            },
            300..=399 => Failure::Fatal(OpenAiError::Redirected {
                endpoint,
                status: code,
                location: header("location")
                    .map(|l| redact_userinfo(&l))
                    .unwrap_or_else(|| "an unnamed location".into()),
            }),
            _ => Failure::Fatal(OpenAiError::Rejected {
                endpoint,
                status: code,
                message,
            }),
        })
    }

    /// Sorts a transport error into worth retrying or not.
    fn transport(&self, e: ureq::Error) -> Failure {
        use ureq::Error as E;
        match e {
            E::Timeout(_) => Failure::Transient {
                reason: format!(
                    "no complete answer within {} s (--embed-timeout)",
                    self.timeout.as_secs_f64()
                ),
                retry_after: None,
            },
            E::Io(_) | E::ConnectionFailed | E::Protocol(_) | E::BodyStalled => {
                Failure::Transient {
                    reason: self.scrub(&e.to_string()),
                    retry_after: None,
                }
            }
            E::HostNotFound => Failure::Fatal(OpenAiError::Unreachable {
                endpoint: self.shown.clone(),
                reason: format!("host not found (check {URL_SOURCE})"),
            }),
            E::BodyExceedsLimit(_) => Failure::Fatal(self.malformed(&format!(
                "the answer is larger than {} MiB",
                MAX_RESPONSE_BYTES >> 20
            ))),
            other => Failure::Fatal(OpenAiError::Unreachable {
                endpoint: self.shown.clone(),
                reason: self.scrub(&other.to_string()),
            }),
        }
    }

    /// The vectors of a 2xx answer, in input order, checked for count and dimension.
    fn parse(&self, body: &[u8], expected: usize) -> Result<Vec<Vec<f32>>, OpenAiError> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let response: EmbeddingResponse =
            serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if inner.is_data() || path != "." {
                    self.malformed(&format!("{path}: {inner}"))
                } else {
                    self.malformed(&format!(
                        "the body is not JSON ({inner}); it starts with {:?}",
                        self.snippet(body)
                    ))
                }
            })?;
        let data = response.data;
        if data.len() != expected {
            return Err(OpenAiError::WrongCount {
                endpoint: self.shown.clone(),
                expected,
                got: data.len(),
            });
        }
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; expected];
        let indexed = data.iter().filter(|d| d.index.is_some()).count();
        if indexed != 0 && indexed != expected {
            return Err(self.malformed("some items of data have an index, others not"));
        }
        for (position, item) in data.into_iter().enumerate() {
            let i = item.index.unwrap_or(position);
            if i >= expected || vectors[i].is_some() {
                return Err(self.malformed(&format!(
                    "data[{position}].index is {i}: out of range or repeated (expected 0..{expected}, each once)"
                )));
            }
            if item.embedding.iter().any(|x| !x.is_finite()) {
                return Err(self.malformed(&format!(
                    "data[{position}].embedding has a value that is not a finite 32-bit float"
                )));
            }
            let want = if self.dimension == 0 {
                vectors
                    .iter()
                    .flatten()
                    .next()
                    .map_or(item.embedding.len(), Vec::len)
            } else {
                self.dimension
            };
            if item.embedding.len() != want {
                return Err(OpenAiError::DimensionMismatch {
                    model: self.model_id.clone(),
                    expected: want,
                    got: item.embedding.len(),
                });
            }
            vectors[i] = Some(item.embedding);
        }
        Ok(vectors.into_iter().flatten().collect())
    }

    fn malformed(&self, reason: &str) -> OpenAiError {
        OpenAiError::Malformed {
            endpoint: self.shown.clone(),
            reason: reason.to_owned(),
        }
    }

    /// The message in an error body: OpenAI's `{"error": {"message"}}`, TEI's `{"error": "…"}`,
    /// vLLM's `{"message"}`, FastAPI's `{"detail"}`, or the body's text; shortened, key removed.
    fn server_message(&self, body: &[u8]) -> String {
        let from_json = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                let text = |v: &serde_json::Value| match v {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Null => None,
                    other => Some(other.to_string()),
                };
                v.pointer("/error/message")
                    .and_then(text)
                    .or_else(|| v.get("error").filter(|e| e.is_string()).and_then(text))
                    .or_else(|| v.get("message").and_then(text))
                    .or_else(|| v.get("detail").and_then(text))
            });
        match from_json {
            Some(message) => shorten(&self.scrub(message.trim())),
            None => self.snippet(body),
        }
    }

    /// The start of a body as text, shortened, key removed.
    fn snippet(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(&body[..body.len().min(4 * MESSAGE_LIMIT)]);
        shorten(&self.scrub(text.trim()))
    }

    /// `text` with the API key (should a server echo it) replaced.
    fn scrub(&self, text: &str) -> String {
        match &self.key {
            Some(key) if key.expose().len() >= 4 => text.replace(key.expose(), "<redacted>"),
            _ => text.to_owned(),
        }
    }
}

/// At most [`MESSAGE_LIMIT`] characters, on one line.
fn shorten(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match one_line.char_indices().nth(MESSAGE_LIMIT) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// Backoff before attempt `attempt + 1`: `base × 2^(attempt-1)` capped at [`MAX_BACKOFF`],
/// then scaled by a random factor in [0.5, 1) so that parallel requests spread out.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let exponential = base
        .saturating_mul(1u32 << (attempt - 1).min(20))
        .min(MAX_BACKOFF);
    exponential.mul_f64(0.5 + 0.5 * random_unit())
}

/// A random number in [0, 1), from the standard library's per-process random hash keys.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The wait a server asks for: `retry-after-ms` (milliseconds), else `Retry-After` in seconds
/// or as an HTTP date (relative to `now`). Unparseable values are ignored.
fn retry_after(
    milliseconds: Option<&str>,
    value: Option<&str>,
    now: time::OffsetDateTime,
) -> Option<Duration> {
    let seconds = |s: &str, scale: f64| {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| Duration::from_secs_f64((v / scale).min(1e6)))
    };
    if let Some(d) = milliseconds.and_then(|ms| seconds(ms, 1000.0)) {
        return Some(d);
    }
    let value = value?.trim();
    seconds(value, 1.0).or_else(|| {
        let date =
            time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822)
                .ok()?;
        let wait = date - now;
        Some(if wait.is_negative() {
            Duration::ZERO
        } else {
            wait.unsigned_abs()
        })
    })
}

impl Embedder for OpenAiEmbedder {
    /// `openai:MODEL`, without the host: the same model gives the same vectors whether it is
    /// reached directly, through a proxy such as LiteLLM or on another machine, and moving the
    /// server (localhost in development, a GPU box for a big restore) must not make `verify`
    /// report every embedding as made by another model, nor refuse an additive restore. What
    /// the name alone cannot tell apart (two servers serving different weights under one name)
    /// is caught when the dimensions differ; otherwise, name models distinctly.
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let cancel = AtomicBool::new(false);
        let pieces: Vec<&[&str]> = texts
            .chunks(self.batch_size.load(Ordering::Relaxed).max(1))
            .collect();
        let run = |piece: &[&str]| {
            let _permit = self.slots.acquire();
            let result = self.request(piece, &cancel);
            if result.is_err() {
                cancel.store(true, Ordering::Relaxed);
            }
            result
        };
        let results: Vec<Result<Vec<Vec<f32>>, RequestError>> = if pieces.len() == 1 {
            vec![run(pieces[0])]
        } else {
            let next = AtomicUsize::new(0);
            let workers = self.max_in_flight.min(pieces.len());
            let mut results: Vec<Option<Result<_, _>>> = (0..pieces.len()).map(|_| None).collect();
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..workers)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut done = Vec::new();
                            while !cancel.load(Ordering::Relaxed) {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                let Some(piece) = pieces.get(i) else { break };
                                done.push((i, run(piece)));
                            }
                            done
                        })
                    })
                    .collect();
                for handle in handles {
                    match handle.join() {
                        Ok(done) => {
                            for (i, result) in done {
                                results[i] = Some(result);
                            }
                        }
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                }
            });
            results
                .into_iter()
                .map(|r| r.unwrap_or(Err(RequestError::Cancelled)))
                .collect()
        };
        let mut vectors = Vec::with_capacity(texts.len());
        let mut cancelled = false;
        for result in results {
            match result {
                Ok(v) => vectors.extend(v),
                Err(RequestError::Failed(e)) => return Err(e.into()),
                Err(RequestError::Cancelled) => cancelled = true,
            }
        }
        if cancelled || vectors.len() != texts.len() {
            return Err(EmbedError::Failed(
                "openai embedder: requests stopped without a reported error".into(),
            ));
        }
        Ok(vectors)
    }

    /// Enough texts for every request slot: `batch size × max in flight`.
    fn preferred_batch_size(&self) -> usize {
        self.batch_size
            .load(Ordering::Relaxed)
            .saturating_mul(self.max_in_flight)
            .max(1)
    }

    fn worth_caching(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                "https://api.openai.com",
                "https://api.openai.com/v1/embeddings",
            ),
            (
                "http://localhost:11434/",
                "http://localhost:11434/v1/embeddings",
            ),
            (
                "http://gpu-box:8080/v1/embeddings",
                "http://gpu-box:8080/v1/embeddings",
            ),
            (
                "http://gpu-box:8080/v1/embeddings/",
                "http://gpu-box:8080/v1/embeddings",
            ),
            ("  http://proxy/openai ", "http://proxy/openai/embeddings"),
            ("HTTP://Host:1/v1", "HTTP://Host:1/v1/embeddings"),
        ] {
            assert_eq!(endpoint_url(base).unwrap(), endpoint, "{base}");
        }
        for bad in [
            "localhost:11434",
            "ftp://x/v1",
            "http://",
            "http:///v1",
            "http://x/v1?a=b",
            "",
        ] {
            assert!(endpoint_url(bad).is_err(), "{bad:?}");
        }
        let e = endpoint_url("gopher://user:secret@host/v1")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn userinfo_is_redacted() {
        assert_eq!(redact_userinfo("https://u:p@h:1/v1"), "https://***@h:1/v1");
        assert_eq!(redact_userinfo("https://h/a@b"), "https://h/a@b");
        assert_eq!(redact_userinfo("no-scheme"), "no-scheme");
    }

    #[test]
    fn retry_after_forms() {
        let now = time::macros::datetime!(2015-10-21 07:28:00 UTC);
        assert_eq!(
            retry_after(None, Some("2"), now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(None, Some(" 0.5 "), now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            retry_after(Some("250"), Some("9"), now),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_after(None, Some("Wed, 21 Oct 2015 07:28:07 GMT"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(None, Some("Wed, 21 Oct 2015 07:27:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(None, Some("soon"), now), None);
        assert_eq!(retry_after(None, Some("-1"), now), None);
        assert_eq!(retry_after(None, None, now), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let base = Duration::from_millis(500);
        for attempt in 1..=10 {
            let d = backoff(base, attempt);
            let full = base.saturating_mul(1 << (attempt - 1)).min(MAX_BACKOFF);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
        assert!(backoff(base, 40) <= MAX_BACKOFF);
    }

    #[test]
    fn keys_do_not_show() {
        let key = ApiKey::new(" sk-very-secret\n");
        assert_eq!(key.expose(), "sk-very-secret");
        assert!(!format!("{key:?}").contains("secret"));
        let settings = EmbedderSettings {
            openai_api_key: Some(key),
            ..Default::default()
        };
        assert!(!format!("{settings:?}").contains("sk-very"));
    }

    #[test]
    fn messages_are_shortened_to_one_line() {
        let long = "é".repeat(1000);
        let s = shorten(&long);
        assert_eq!(s.chars().count(), MESSAGE_LIMIT + 1);
        assert_eq!(shorten("a\nb"), "a b");
    }
}
