//! A real OpenAI-compatible embedding server for the tests, on a loopback port: HTTP/1.1 with
//! keep-alive and `Content-Length`, a thread per connection. It serves `POST /v1/embeddings`
//! (or, mounted at the root as infinity is by default, `POST /embeddings`) with vectors
//! computed by [`HashEmbedder`] (returned in reverse order, with their `index`, and the model
//! name echoed, as servers do), and a script decides per request what to answer instead: a
//! delay, a status with headers, a malformed body, vectors of another dimension or count or
//! under another model name, a dropped connection, no answer at all; [`Reply`] builds the
//! error bodies of OpenAI, infinity (FastAPI), text-embeddings-inference, vLLM and Ollama.
//! Other paths get a 404. It can hold its answers until a number of requests overlap. It
//! records every request and the most requests it held at once.
#![allow(dead_code)]

use goldset::embed::HashEmbedder;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// 0 for the first request the server received, and so on.
    pub n: usize,
    /// When the server had read it.
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    /// The JSON body (`Null` when it was not JSON).
    pub body: serde_json::Value,
    /// `body.input` as strings.
    pub inputs: Vec<String>,
}

/// What to answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The right vectors.
    Vectors,
    /// The right vectors, after a pause.
    VectorsAfter(Duration),
    /// Vectors of another dimension.
    Dimension(usize),
    /// The right vectors, but only the first `n` of them.
    FirstVectors(usize),
    /// Any status, headers and body.
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// The right vectors, under another model name (a server that renames the model).
    Renamed(String),
    /// The right vectors, without a `model` field.
    Unnamed,
    /// Close the connection without answering.
    Drop,
    /// Never answer: hold the connection until the client closes it (or a minute passes), so
    /// that the client's timeout fires however slow the machine is.
    Hang,
}

impl Reply {
    /// A status with a JSON body of OpenAI's shape, `{"error": {"message": …}}`.
    pub fn error(status: u16, message: &str) -> Reply {
        Reply::Status {
            status,
            headers: Vec::new(),
            body: serde_json::json!({"error": {"message": message, "type": "test"}}).to_string(),
        }
    }

    /// A status with a JSON body.
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply::Status {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    /// infinity's (FastAPI's) 422 for texts longer than `max` characters: a list of validation
    /// errors, one per text, each echoing the text.
    pub fn infinity_too_long(inputs: &[String], max: usize) -> Reply {
        let detail: Vec<serde_json::Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, text)| {
                serde_json::json!({
                    "type": "string_too_long",
                    "loc": ["body", "input", i],
                    "msg": format!("String should have at most {max} characters"),
                    "input": text,
                    "ctx": {"max_length": max},
                })
            })
            .collect();
        Reply::json(422, serde_json::json!({ "detail": detail }))
    }

    /// FastAPI's 422 for a list with more than `max` items (infinity's batch limit).
    pub fn infinity_too_many(inputs: &[String], max: usize) -> Reply {
        Reply::json(
            422,
            serde_json::json!({"detail": [{
                "type": "too_long",
                "loc": ["body", "input"],
                "msg": format!("List should have at most {max} items after validation, not {}", inputs.len()),
                "input": inputs,
                "ctx": {"field_type": "List", "max_length": max, "actual_length": inputs.len()},
            }]}),
        )
    }

    /// text-embeddings-inference's error: `{"error": message, "error_type": kind}`.
    pub fn tei(status: u16, kind: &str, message: &str) -> Reply {
        Reply::json(
            status,
            serde_json::json!({"error": message, "error_type": kind}),
        )
    }

    /// vLLM's error: `{"object": "error", "message", "type", "code"}`.
    pub fn vllm(status: u16, message: &str) -> Reply {
        Reply::json(
            status,
            serde_json::json!({"object": "error", "message": message, "type": "BadRequestError", "param": null, "code": status}),
        )
    }

    /// Ollama's error: `{"error": message}`.
    pub fn ollama(status: u16, message: &str) -> Reply {
        Reply::json(status, serde_json::json!({ "error": message }))
    }

    /// A 200 with this body.
    pub fn body(body: &str) -> Reply {
        Reply::Status {
            status: 200,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    }
}

type Script = dyn Fn(&Seen) -> Reply + Send + Sync;

struct State {
    dimension: usize,
    /// The path embeddings are served at.
    route: &'static str,
    script: Box<Script>,
    /// Pause before every answer.
    pause: Duration,
    /// Hold every answer but the first (the dimension probe) until this many requests have been
    /// in flight at once, for at most [`OVERLAP_LIMIT`] in all; 0 or 1: no holding.
    overlap: usize,
    /// Set when the overlap was waited for in vain: no answer is held after that.
    overlap_given_up: std::sync::atomic::AtomicBool,
    next: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

/// See the module documentation.
pub struct EmbeddingServer {
    addr: SocketAddr,
    state: Arc<State>,
}

impl EmbeddingServer {
    /// A server of `dimension`-long vectors that answers each request as `script` says.
    pub fn start(
        dimension: usize,
        script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::start_with_pause(dimension, Duration::ZERO, script)
    }

    /// Like [`EmbeddingServer::start`], pausing `pause` before every answer.
    pub fn start_with_pause(
        dimension: usize,
        pause: Duration,
        script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        Self::launch(
            listener,
            "/v1/embeddings",
            dimension,
            pause,
            0,
            Box::new(script),
        )
    }

    /// Like [`EmbeddingServer::start`], holding answers until `overlap` requests have been in
    /// flight at once: a client that sends concurrent requests is seen doing so however the
    /// threads are scheduled (a pause would only make it likely).
    pub fn start_overlapping(
        dimension: usize,
        overlap: usize,
        script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        Self::launch(
            listener,
            "/v1/embeddings",
            dimension,
            Duration::ZERO,
            overlap,
            Box::new(script),
        )
    }

    /// Like [`EmbeddingServer::start`], serving `POST /embeddings` at the root (infinity's
    /// default) and 404 on `/v1/embeddings`.
    pub fn root_mounted(
        dimension: usize,
        script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        Self::launch(
            listener,
            "/embeddings",
            dimension,
            Duration::ZERO,
            0,
            Box::new(script),
        )
    }

    /// Like [`EmbeddingServer::start`], on the loopback address `addr` (a server coming back
    /// on the port it had before a restart).
    pub fn start_on(
        addr: SocketAddr,
        dimension: usize,
        script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind(addr).expect("bind the given loopback port");
        Self::launch(
            listener,
            "/v1/embeddings",
            dimension,
            Duration::ZERO,
            0,
            Box::new(script),
        )
    }

    fn launch(
        listener: TcpListener,
        route: &'static str,
        dimension: usize,
        pause: Duration,
        overlap: usize,
        script: Box<Script>,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            dimension,
            route,
            script,
            pause,
            overlap,
            overlap_given_up: std::sync::atomic::AtomicBool::new(false),
            next: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        EmbeddingServer { addr, state }
    }

    /// A server that always answers with the right vectors.
    pub fn healthy(dimension: usize) -> Self {
        Self::start(dimension, |_| Reply::Vectors)
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in the order received.
    pub fn seen(&self) -> Vec<Seen> {
        let mut seen = self.state.seen.lock().unwrap().clone();
        seen.sort_by_key(|s| s.n);
        seen
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.state.next.load(Ordering::SeqCst)
    }

    /// The most requests the server held at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// The vector the server computes for `text`.
    pub fn vector(&self, text: &str) -> Vec<f32> {
        HashEmbedder::new(self.state.dimension).embed_one(text)
    }
}

/// Serves one connection until the client closes it.
fn serve(stream: TcpStream, state: &State) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut length = 0usize;
        let mut authorization = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().unwrap_or(0),
                    "authorization" => authorization = Some(value.to_owned()),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let at = Instant::now();
        let n = state.next.fetch_add(1, Ordering::SeqCst);
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let inputs: Vec<String> = body["input"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let seen = Seen {
            n,
            at,
            method,
            path,
            authorization,
            body,
            inputs,
        };
        state.seen.lock().unwrap().push(seen.clone());
        let reply = if seen.method == "POST" && seen.path == state.route {
            (state.script)(&seen)
        } else {
            Reply::error(404, &format!("no route {} {}", seen.method, seen.path))
        };
        std::thread::sleep(state.pause);
        let model = seen.body["model"].as_str().map(str::to_owned);
        if n > 0 {
            hold_until_overlap(state);
        }
        // The request stops counting as in flight before its answer goes out: the client may send
        // its next request as soon as it has the answer, and the two must not count as overlapping.
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        let answer = match reply {
            Reply::Vectors => Some(vectors(state.dimension, &seen.inputs, None, model)),
            Reply::VectorsAfter(pause) => {
                std::thread::sleep(pause);
                Some(vectors(state.dimension, &seen.inputs, None, model))
            }
            Reply::Dimension(d) => Some(vectors(d, &seen.inputs, None, model)),
            Reply::FirstVectors(k) => Some(vectors(state.dimension, &seen.inputs, Some(k), model)),
            Reply::Renamed(name) => Some(vectors(state.dimension, &seen.inputs, None, Some(name))),
            Reply::Unnamed => Some(vectors(state.dimension, &seen.inputs, None, None)),
            Reply::Status {
                status,
                headers,
                body,
            } => Some((status, headers, body)),
            Reply::Drop => None,
            Reply::Hang => {
                // Wait for the client to give up and close (a read returns 0 or fails).
                let _ = writer.set_read_timeout(Some(Duration::from_secs(60)));
                let _ = reader.read(&mut [0; 1]);
                None
            }
        };
        let ok = match answer {
            Some((status, headers, body)) => {
                let mut head = format!(
                    "HTTP/1.1 {status} Test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                writer
                    .write_all(head.as_bytes())
                    .and_then(|()| writer.write_all(body.as_bytes()))
                    .and_then(|()| writer.flush())
                    .is_ok()
            }
            None => false,
        };
        if !ok {
            let _ = writer.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Longest an overlapping server holds answers, in all.
const OVERLAP_LIMIT: Duration = Duration::from_secs(30);

/// Holds the current answer until `state.overlap` requests have been in flight at once.
fn hold_until_overlap(state: &State) {
    let deadline = Instant::now() + OVERLAP_LIMIT;
    while state.max_in_flight.load(Ordering::SeqCst) < state.overlap
        && !state.overlap_given_up.load(Ordering::SeqCst)
    {
        if Instant::now() > deadline {
            state.overlap_given_up.store(true, Ordering::SeqCst);
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A 200 answer of OpenAI's shape with the vectors of `inputs`, last first, naming `model`.
fn vectors(
    dimension: usize,
    inputs: &[String],
    only: Option<usize>,
    model: Option<String>,
) -> (u16, Vec<(String, String)>, String) {
    let embedder = HashEmbedder::new(dimension);
    let mut data: Vec<serde_json::Value> = inputs
        .iter()
        .enumerate()
        .take(only.unwrap_or(usize::MAX))
        .map(|(i, text)| {
            serde_json::json!({
                "object": "embedding",
                "index": i,
                "embedding": embedder.embed_one(text),
            })
        })
        .collect();
    data.reverse();
    let mut body = serde_json::json!({
        "object": "list",
        "data": data,
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    });
    if let Some(model) = model {
        body["model"] = model.into();
    }
    (200, Vec::new(), body.to_string())
}
