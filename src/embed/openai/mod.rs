//! `openai:MODEL` — any OpenAI-compatible embeddings endpoint: OpenAI itself, Ollama,
//! text-embeddings-inference, vLLM, infinity, LiteLLM… This is the only module that speaks HTTP.
//!
//! * **Requests**: `{"model": MODEL, "input": [texts…], "encoding_format": "float"}` with
//!   `Authorization: Bearer KEY` when a key is configured; the answer's `data[].embedding` is
//!   put back in input order by `data[].index`.
//! * **Endpoint** ([`endpoint`]): a pasted `…/embeddings` URL is used as is, another path gets
//!   `/embeddings`, a bare host tries `/v1/embeddings` and on 404 `/embeddings` (infinity's
//!   default), settling on the first that answers during the probe.
//! * **Model**: an answer that names another model than the one asked for is refused
//!   ([`response::same_model`] says which names mean the same model), unless aliases are allowed
//!   (`EmbedderSettings::openai_allow_model_alias`); an answer without a model name is accepted.
//! * **Batching**: [`Embedder::embed`] splits its texts into requests of at most
//!   `batch_size` texts and keeps up to `max_in_flight` of them in flight at once (scoped
//!   threads sharing one connection pool; a semaphore bounds the total even across concurrent
//!   callers). A request the server refuses as too large (413, or a 422 whose reason says too
//!   long or too many) is halved, and later requests use the smaller size.
//! * **Retries** ([`retry`]): 408, 425, 429, 5xx, timeouts and refused or broken connections are
//!   retried with exponential backoff and jitter, or after the server's `Retry-After`, for up to
//!   two minutes of waiting by default (an embedding server's restart takes about 30 s).
//!   Anything else fails at once with an [`OpenAiError`] that says what to fix, with the
//!   server's reason read from its error body ([`error`]), never the texts it echoes.
//! * **Dimension**: learnt at construction from one small probe request, which also surfaces a
//!   wrong URL, key or model before a restore opens its transaction.
//! * **Secrets**: the key lives in an [`ApiKey`], whose `Debug` is redacted; it appears in no
//!   error or log line, and server messages are scrubbed of it before they are shown.

mod endpoint;
mod error;
mod response;
mod retry;
mod slots;

pub use super::key::ApiKey;
pub use error::OpenAiError;
pub use retry::{DEFAULT_RETRY_BASE, DEFAULT_RETRY_MAX_DELAY, DEFAULT_RETRY_WINDOW};

use super::{EmbedError, Embedder, EmbedderSettings};
use error::{colon, scrub, server_reason, URL_SOURCE};
use response::Problem;
use retry::RetryPolicy;
use slots::Slots;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use url::Url;

/// Base URL used when neither `--openai-base-url` nor `OPENAI_BASE_URL` is set.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Texts per request unless configured (`--embed-batch-size`).
pub const DEFAULT_BATCH_SIZE: usize = 64;
/// Requests in flight at once unless configured (`--embed-concurrency`).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// How long one request may take, from connecting to the last byte (`--embed-timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest response body read (a batch of 64 × 3072-dimension vectors is about 4 MiB).
const MAX_RESPONSE_BYTES: u64 = 256 << 20;
/// How often a request waiting to retry checks whether another one of its call failed.
const CANCEL_CHECK: Duration = Duration::from_millis(100);
/// The text of the dimension probe.
const PROBE_TEXT: &str = "goldset dimension probe";

/// The model id stored with the vectors of `openai:MODEL`.
pub fn model_id(model: &str) -> String {
    format!("openai:{model}")
}

/// How one attempt failed.
enum Failure {
    /// Worth another attempt, after `retry_after` when the server said so.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 413, or a 422 for size: too many or too long texts in one request.
    TooLarge { status: u16, message: String },
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

/// See the module documentation.
pub struct OpenAiEmbedder {
    agent: ureq::Agent,
    /// The URL requests go to (settled by the probe).
    endpoint: Url,
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
    retry: RetryPolicy,
    /// Accept answers that name another model (with one warning).
    allow_alias: bool,
    alias_warned: AtomicBool,
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
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl OpenAiEmbedder {
    /// Connects to the endpoint `settings` name (or [`DEFAULT_BASE_URL`]) for `model`, and
    /// learns the model's dimension with one probe request (retried like any other). For a bare
    /// host the probe also settles the endpoint (see [`endpoint::candidates`]).
    pub fn connect(model: &str, settings: &EmbedderSettings) -> Result<Self, OpenAiError> {
        let base = settings
            .openai_base_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or(DEFAULT_BASE_URL);
        let candidates = endpoint::candidates(base)?;
        let max_in_flight = settings
            .openai_max_in_flight
            .unwrap_or(DEFAULT_MAX_IN_FLIGHT)
            .max(1);
        let timeout = settings
            .openai_timeout
            .filter(|t| !t.is_zero())
            .unwrap_or(DEFAULT_TIMEOUT);
        // rustls (ring) with the operating system's roots: no libssl (docs/ARCHITECTURE.md).
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
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
        let first = candidates[0].clone();
        let mut embedder = OpenAiEmbedder {
            agent,
            shown: endpoint::redact(&first),
            endpoint: first,
            model: model.to_owned(),
            model_id: model_id(model),
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
            retry: RetryPolicy::from_settings(settings),
            allow_alias: settings.openai_allow_model_alias,
            alias_warned: AtomicBool::new(false),
        };
        let mut not_found: Option<OpenAiError> = None;
        let mut vector = None;
        for candidate in candidates {
            embedder.shown = endpoint::redact(&candidate);
            embedder.endpoint = candidate;
            match embedder.request(&[PROBE_TEXT], &AtomicBool::new(false)) {
                Ok(mut vectors) => {
                    if not_found.is_some() {
                        tracing::info!(
                            "no embeddings route under /v1 (404); settled on {}",
                            embedder.shown
                        );
                    }
                    vector = Some(vectors.pop().unwrap_or_default());
                    break;
                }
                Err(RequestError::Failed(e @ OpenAiError::NotFound { .. })) => {
                    not_found = Some(match not_found {
                        None => e,
                        Some(first) => first.also_tried(e),
                    });
                }
                Err(RequestError::Failed(e)) => return Err(e),
                Err(RequestError::Cancelled) => {
                    return Err(embedder.malformed("the probe request was cancelled"))
                }
            }
        }
        let Some(vector) = vector else {
            return Err(not_found.unwrap_or_else(|| embedder.malformed("no endpoint answered")));
        };
        if vector.is_empty() {
            return Err(embedder.malformed("the model returned an empty vector"));
        }
        embedder.dimension = vector.len();
        tracing::info!(
            endpoint = %embedder.shown,
            model = %embedder.model,
            dimension = embedder.dimension,
            "openai embedder ready"
        );
        Ok(embedder)
    }

    /// One request's texts, with retries; splits itself when the server says it is too large.
    fn request(&self, texts: &[&str], cancel: &AtomicBool) -> Result<Vec<Vec<f32>>, RequestError> {
        let started = Instant::now();
        let mut schedule = self.retry.schedule();
        loop {
            let failure = match self.attempt(texts) {
                Ok(vectors) => return Ok(vectors),
                Err(failure) => failure,
            };
            match failure {
                Failure::Fatal(e) => return Err(e.into()),
                Failure::TooLarge { status, message } => {
                    if texts.len() <= 1 {
                        return Err(OpenAiError::Rejected {
                            endpoint: self.shown.clone(),
                            status,
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
                            "{} refused {} texts in one request as too large ({status}); sending at most \
                             {smaller} (set --embed-batch-size to start there)",
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
                    let Some(delay) = schedule.next_wait(retry_after) else {
                        return Err(OpenAiError::GaveUp {
                            endpoint: self.shown.clone(),
                            attempts: schedule.attempts(),
                            elapsed: started.elapsed(),
                            last: reason,
                        }
                        .into());
                    };
                    tracing::warn!(
                        "{}: {reason}; attempt {} in {:.1} s",
                        self.shown,
                        schedule.attempts(),
                        delay.as_secs_f64()
                    );
                    // In slices, so that another request's failure stops this one soon.
                    let until = Instant::now() + delay;
                    loop {
                        if cancel.load(Ordering::Relaxed) {
                            return Err(RequestError::Cancelled);
                        }
                        let left = until.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        std::thread::sleep(left.min(CANCEL_CHECK));
                    }
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
            .post(self.endpoint.as_str())
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
        let reason = server_reason(&body, self.key.as_ref(), texts);
        let message = reason.text;
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
                also_tried: None,
            }),
            413 => Failure::TooLarge {
                status: code,
                message,
            },
            422 if reason.too_large => Failure::TooLarge {
                status: code,
                message,
            },
            408 | 425 | 429 | 500..=599 => Failure::Transient {
                reason: format!(
                    "{code} {}{}",
                    status.canonical_reason().unwrap_or("error"),
                    colon(&message)
                ),
                retry_after: retry::retry_after(
                    header("retry-after-ms").as_deref(),
                    header("retry-after").as_deref(),
                    time::OffsetDateTime::now_utc(),
                ),
            },
            300..=399 => Failure::Fatal(OpenAiError::Redirected {
                endpoint,
                status: code,
                location: header("location")
                    .map(|l| endpoint::location(&self.endpoint, &l))
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
            E::Io(ref io) if error::tls_failure(io).is_some() => {
                Failure::Fatal(OpenAiError::Unreachable {
                    endpoint: self.shown.clone(),
                    reason: error::tls_failure(io).unwrap_or_default(),
                })
            }
            E::Io(_) | E::ConnectionFailed | E::Protocol(_) | E::BodyStalled => {
                Failure::Transient {
                    reason: scrub(&e.to_string(), self.key.as_ref()),
                    retry_after: None,
                }
            }
            E::HostNotFound => Failure::Fatal(OpenAiError::Unreachable {
                endpoint: self.shown.clone(),
                reason: format!("host not found (check {URL_SOURCE})"),
            }),
            E::BodyExceedsLimit(_) => Failure::Fatal(self.malformed(&format!(
                "the answer is larger than {}",
                indicatif::HumanBytes(MAX_RESPONSE_BYTES)
            ))),
            other => Failure::Fatal(OpenAiError::Unreachable {
                endpoint: self.shown.clone(),
                reason: scrub(&other.to_string(), self.key.as_ref()),
            }),
        }
    }

    /// The vectors of a 2xx answer, in input order, checked for count, dimension and model.
    fn parse(&self, body: &[u8], expected: usize) -> Result<Vec<Vec<f32>>, OpenAiError> {
        let answer = response::parse(
            body,
            expected,
            self.dimension,
            &self.model,
            self.allow_alias,
        )
        .map_err(|problem| match problem {
            Problem::Malformed(reason) => self.malformed(&scrub(&reason, self.key.as_ref())),
            Problem::WrongCount { got } => OpenAiError::WrongCount {
                endpoint: self.shown.clone(),
                expected,
                got,
            },
            Problem::Dimension { expected, got } => OpenAiError::DimensionMismatch {
                model: self.model_id.clone(),
                expected,
                got,
            },
            Problem::Model { served } => OpenAiError::ModelMismatch {
                endpoint: self.shown.clone(),
                requested: self.model.clone(),
                served,
            },
        })?;
        if let Some(served) = answer.alias {
            if !self.alias_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "{} answers for model {served:?} when {:?} is asked for; accepted as an alias, \
                     embeddings are recorded as {}",
                    self.shown,
                    self.model,
                    self.model_id
                );
            }
        }
        Ok(answer.vectors)
    }

    fn malformed(&self, reason: &str) -> OpenAiError {
        OpenAiError::Malformed {
            endpoint: self.shown.clone(),
            reason: reason.to_owned(),
        }
    }
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
}
