//! Keep-alive HTTP/1.1 connections to the model on loopback, driven by the request's own task.
//!
//! The monitor talks to one address over plain HTTP/1.1 and has every request body in memory
//! before it forwards it, so the client side needs no general-purpose HTTP client: a request
//! takes the most recently used idle connection (warm in cache, least likely to have hit the
//! model's idle timeout) or opens one, writes the request in one call, reads and parses the
//! response head itself, and puts the connection back once the response body has been read to
//! the end. No task, channel or timer per connection: hyper's client connection ran in a task
//! of its own, so every request crossed two tasks through a channel and a oneshot and woke the
//! connection's driver for each read and write; here the request's task does the socket calls
//! itself, which saved most of the user-space CPU the client side cost in `benches/proxy`.
//!
//! What hyper's client did and this keeps: `content-length` set from the body (none for an
//! empty body), informational (1xx) responses skipped, response framing by RFC 9112 §6.3
//! (HEAD, 204 and 304 without a body, chunked, content-length, else until the model closes),
//! a non-canonical reason phrase kept as [`hyper::ext::ReasonPhrase`], trailers passed on, and
//! the connection reused only when the response allows it (HTTP/1.1 without
//! `Connection: close`, or HTTP/1.0 with `keep-alive`) and was read to its end.

use std::future::Future as _;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long an idle connection is reused: shorter than the keep-alive of common model servers
/// (uvicorn 5 s, gunicorn 2 s), so a connection the server is about to close is rarely taken.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most idle connections kept (hyper-util's `pool_max_idle_per_host` before).
pub const MAX_IDLE: usize = 1024;
/// TCP keep-alive probes on connections to the model.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Largest response head accepted (hyper's default read buffer limit).
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// Most header lines in a response head (hyper's default).
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line or trailer section of a chunked response.
const MAX_CHUNK_LINE: usize = 64 * 1024;
/// What each read asks for: larger than a typical prediction response, so one read takes it
/// whole and comes back short of the buffer, which tells tokio the socket is drained (no
/// extra read that would only say "nothing more").
const READ_CHUNK: usize = 16 * 1024;

/// One connection to the model and what has been read from it but not consumed yet.
struct Connection {
    stream: TcpStream,
    buffer: BytesMut,
}

struct Idle {
    connection: Connection,
    since: Instant,
}

/// Connections to the model.
pub struct Upstream {
    /// `host:port` to connect to.
    address: String,
    /// `Host` for requests that arrive without one (HTTP/2 clients send `:authority`).
    host: HeaderValue,
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("address", &self.address)
            .finish()
    }
}

/// Why no response came back.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened.
    Connect(io::Error),
    /// The connection failed or closed before a whole response head arrived: the model
    /// answered nothing, so one retry on a fresh connection is safe.
    Closed(io::Error),
    /// The model's answer is not a valid HTTP/1.x response.
    Invalid(&'static str),
}

/// A connection taken for one request.
pub struct Taken {
    connection: Connection,
    /// Taken from the idle stack (it may have been closed by the model meanwhile).
    pub reused: bool,
}

/// How the body of a response is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked transfer coding.
    Chunked(Chunk),
    /// Until the model closes the connection.
    Close,
}

/// Where a chunked body's reader is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk: this many bytes are left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

/// Where one header line's name and value are in a response head.
#[derive(Clone, Copy, Debug)]
struct Line {
    name: (usize, usize),
    value: (usize, usize),
}

/// A response head from the model and how to read its body. The head is kept as the model
/// sent it: the monitor writes it on to the client line by line without building a header
/// map ([`ResponseHead::to_parts`] builds one for the paths that need it).
pub struct ResponseHead {
    /// The status.
    pub status: StatusCode,
    version: Version,
    /// The reason phrase, when it is not the status's canonical one.
    reason: Option<(usize, usize)>,
    raw: Bytes,
    lines: Vec<Line>,
    framing: Option<Framing>,
    keep_alive: bool,
    /// The body's length, when the head declares one (`content-length`).
    pub content_length: Option<u64>,
}

impl ResponseHead {
    /// The header lines, name and value, in the order the model sent them.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines.iter().map(|l| {
            (
                &self.raw[l.name.0..l.name.0 + l.name.1],
                &self.raw[l.value.0..l.value.0 + l.value.1],
            )
        })
    }

    /// The reason phrase, when it is not the status's canonical one.
    pub fn reason(&self) -> Option<&[u8]> {
        self.reason.map(|(at, len)| &self.raw[at..at + len])
    }

    /// Status, version, headers and extensions, as hyper's client gave them (a non-canonical
    /// reason phrase as [`hyper::ext::ReasonPhrase`]). Header values share the head's memory.
    pub fn to_parts(&self) -> http::response::Parts {
        let mut map = HeaderMap::with_capacity(self.lines.len());
        for l in &self.lines {
            // httparse has checked names are tokens and values have no control characters,
            // which is what the `http` types accept: nothing is dropped here in practice.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&self.raw[l.name.0..l.name.0 + l.name.1]),
                HeaderValue::from_maybe_shared(self.raw.slice(l.value.0..l.value.0 + l.value.1)),
            ) {
                map.append(name, value);
            }
        }
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = self.status;
        parts.version = self.version;
        parts.headers = map;
        if let Some((at, len)) = self.reason
            && let Ok(reason) = hyper::ext::ReasonPhrase::try_from(self.raw.slice(at..at + len))
        {
            parts.extensions.insert(reason);
        }
        parts
    }
}

impl Upstream {
    /// Connections to `uri`'s authority (`http://host:port`).
    pub fn new(uri: &Uri) -> anyhow::Result<Self> {
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow::anyhow!("upstream {uri} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let host = if port == 80 {
            authority.host().to_string()
        } else {
            format!("{}:{port}", authority.host())
        };
        Ok(Self {
            address: format!("{}:{port}", authority.host()),
            host: HeaderValue::from_str(&host)?,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The `Host` header value requests without one get (what hyper-util's client set).
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// An idle connection that is still open, else a new one (`fresh` skips the idle ones).
    pub async fn take(&self, fresh: bool, now: Instant) -> Result<Taken, SendError> {
        if !fresh && let Some(connection) = self.pop_idle(now) {
            return Ok(Taken {
                connection,
                reused: true,
            });
        }
        Ok(Taken {
            connection: self.connect().await?,
            reused: false,
        })
    }

    fn pop_idle(&self, now: Instant) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(i) = idle.pop() {
            if now.saturating_duration_since(i.since) >= IDLE_TIMEOUT {
                // The stack is in the order connections came back: the rest are older still.
                idle.clear();
                return None;
            }
            if i.connection.still_open() {
                return Some(i.connection);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Connection, SendError> {
        let stream = TcpStream::connect(self.address.as_str())
            .await
            .map_err(SendError::Connect)?;
        let _ = stream.set_nodelay(true);
        let socket = socket2::SockRef::from(&stream);
        let _ = socket.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE));
        Ok(Connection {
            stream,
            buffer: BytesMut::new(),
        })
    }

    /// Sends `request` (from [`encode_request`]) on `taken` and reads the response head; the
    /// connection stays with the caller, then with the body ([`ModelBody`]), which gives it
    /// back at its end.
    pub async fn send(
        taken: &mut Taken,
        request: &[u8],
        method: &Method,
    ) -> Result<ResponseHead, SendError> {
        let connection = &mut taken.connection;
        connection
            .stream
            .write_all(request)
            .await
            .map_err(SendError::Closed)?;
        loop {
            if !connection.buffer.is_empty()
                && let Some(head) = parse_head(&mut connection.buffer, method)?
            {
                return Ok(head);
            }
            if connection.buffer.len() > MAX_HEAD_BYTES {
                return Err(SendError::Invalid("response head too large"));
            }
            connection.buffer.reserve(READ_CHUNK);
            match connection.stream.read_buf(&mut connection.buffer).await {
                Ok(0) => {
                    return Err(SendError::Closed(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(_) => {}
                Err(e) => return Err(SendError::Closed(e)),
            }
        }
    }

    /// Puts a connection whose response was read to the end back on the idle stack.
    fn give_back(&self, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
        }
    }
}

impl Connection {
    /// False when the model closed the connection, or sent something, while it was idle.
    fn still_open(&self) -> bool {
        if !self.buffer.is_empty() {
            return false;
        }
        // Readiness as the runtime last saw it, without a system call: responses are read
        // with a buffer larger than they are, so a drained socket reads as not ready; only
        // a FIN or stray bytes since then (or a response that filled the buffer exactly)
        // make it ready, and one read tells which.
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => matches!(
                self.stream.try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            ),
        }
    }

    /// Up to `left` bytes of a body whose length is known (reading when nothing is buffered),
    /// and how many are left after them; the stream ending first is an error.
    fn poll_take(&mut self, cx: &mut Context<'_>, left: u64) -> Poll<io::Result<(Bytes, u64)>> {
        if self.buffer.is_empty() && ready!(self.poll_fill(cx))? == 0 {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        let take = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(self.buffer.len());
        let data = self.buffer.split_to(take).freeze();
        Poll::Ready(Ok((data, left - take as u64)))
    }

    /// Reads more into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buffer.reserve(READ_CHUNK);
        // The future only borrows the stream and the buffer: polling it once and dropping
        // it when pending loses nothing (the waker stays registered with the runtime).
        let read = self.stream.read_buf(&mut self.buffer);
        std::pin::pin!(read).poll(cx)
    }
}

/// The request as it goes on the wire: request line, headers in `headers`' order, then
/// `content-length` (none for an empty body, as hyper's client did) and the body, in one
/// buffer so it goes out in one write.
pub fn encode_request(method: &Method, target: &Uri, headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let path = target.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Vec::with_capacity(64 + path.len() + headers.len() * 32 + body.len());
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "content-length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Parses a response head at the start of `buffer`, skipping informational responses;
/// `None` until it is complete.
fn parse_head(buffer: &mut BytesMut, method: &Method) -> Result<Option<ResponseHead>, SendError> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let length = match response.parse(buffer) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(SendError::Invalid("too many response headers"));
            }
            Err(_) => return Err(SendError::Invalid("malformed response head")),
        };
        let code = response.code.unwrap_or_default();
        let status =
            StatusCode::from_u16(code).map_err(|_| SendError::Invalid("invalid status code"))?;
        let version = if response.version == Some(1) {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        // Offsets of each name and value, so they can be read from the frozen head.
        let base = buffer.as_ptr() as usize;
        let span = |b: &[u8]| (b.as_ptr() as usize - base, b.len());
        let reason = response
            .reason
            .filter(|r| Some(*r) != status.canonical_reason())
            .map(|r| span(r.as_bytes()));
        let mut lines = Vec::with_capacity(response.headers.len());
        let mut keep_alive = version == Version::HTTP_11;
        let mut saw_close = false;
        let mut te_chunked = None;
        let mut content_length: Option<u64> = None;
        for h in response.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"connection") {
                // Once any Connection line asks to close, a later keep-alive does not undo it.
                if saw_close || has_token(h.value, b"close") {
                    saw_close = true;
                    keep_alive = false;
                } else if !keep_alive {
                    keep_alive = has_token(h.value, b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // The last coding decides.
                te_chunked = Some(
                    h.value
                        .rsplit(|b| *b == b',')
                        .next()
                        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked")),
                );
            } else if name.eq_ignore_ascii_case(b"content-length") {
                for part in h.value.split(|b| *b == b',') {
                    let n = decimal(part.trim_ascii())
                        .ok_or(SendError::Invalid("invalid content-length"))?;
                    if content_length.is_some_and(|l| l != n) {
                        return Err(SendError::Invalid("conflicting content-length"));
                    }
                    content_length = Some(n);
                }
            }
            lines.push(Line {
                name: span(name),
                value: span(h.value),
            });
        }
        let raw = buffer.split_to(length).freeze();
        if (100..200).contains(&code) && code != 101 {
            continue;
        }
        let framing = framing(status, method, version, te_chunked, content_length)?;
        if matches!(framing, Some(Framing::Close)) || code == 101 {
            keep_alive = false;
        }
        return Ok(Some(ResponseHead {
            status,
            version,
            reason,
            raw,
            lines,
            framing,
            keep_alive,
            content_length,
        }));
    }
}

/// A `content-length` value: ASCII digits only (no sign, no spaces), within u64.
pub(super) fn decimal(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
pub(super) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The body's framing (RFC 9112 §6.3, what hyper's client decided); `None`: no body.
/// `chunked`: whether a transfer-encoding was sent and ends in `chunked`.
fn framing(
    status: StatusCode,
    method: &Method,
    version: Version,
    chunked: Option<bool>,
    length: Option<u64>,
) -> Result<Option<Framing>, SendError> {
    if matches!(status.as_u16(), 101 | 204 | 304) || *method == Method::HEAD {
        return Ok(None);
    }
    if *method == Method::CONNECT && status.is_success() {
        return Ok(None);
    }
    if let Some(chunked) = chunked {
        if version == Version::HTTP_10 {
            return Err(SendError::Invalid(
                "transfer-encoding in an HTTP/1.0 response",
            ));
        }
        return Ok(Some(if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::Close
        }));
    }
    Ok(Some(match length {
        Some(0) => return Ok(None),
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    }))
}

/// A response body read from the model's connection by whoever polls it (the request's task
/// when the monitor reads it, hyper's server connection when it streams through). At its end
/// the connection goes back to the idle stack if the response allows; dropped earlier, the
/// connection closes with it (it cannot carry another response while this one is unread).
pub struct ModelBody {
    connection: Option<Connection>,
    framing: Option<Framing>,
    keep_alive: bool,
    upstream: Arc<Upstream>,
}

impl ModelBody {
    /// The body of `head`, read from `taken`.
    pub fn new(head: &ResponseHead, taken: Taken, upstream: Arc<Upstream>) -> Self {
        let mut body = Self {
            connection: Some(taken.connection),
            framing: head.framing,
            keep_alive: head.keep_alive,
            upstream,
        };
        if body.framing.is_none() {
            body.finish();
        }
        body
    }

    /// The body has been read to its end: the connection is reusable unless the response
    /// said otherwise or the model sent more than the response.
    fn finish(&mut self) {
        self.framing = None;
        if let Some(connection) = self.connection.take()
            && self.keep_alive
            && connection.buffer.is_empty()
        {
            self.upstream.give_back(connection);
        }
    }

    fn broken(&mut self, error: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.framing = None;
        self.connection = None;
        Poll::Ready(Some(Err(error)))
    }

    /// A whole line (without its CRLF) at the start of the buffer, or a read for more.
    fn poll_line(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        let Some(connection) = self.connection.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        loop {
            if let Some(end) = connection.buffer.windows(2).position(|w| w == b"\r\n") {
                let line = connection.buffer.split_to(end + 2).freeze();
                return Poll::Ready(Ok(line.slice(..end)));
            }
            if connection.buffer.len() > MAX_CHUNK_LINE {
                return Poll::Ready(Err(invalid("chunk line too long")));
            }
            if ready!(connection.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn chunk_size(line: &[u8]) -> io::Result<u64> {
    // chunk-size [ chunk-ext ]: extensions are ignored, as hyper did.
    let digits = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 16 {
        return Err(invalid("invalid chunk size"));
    }
    let mut size: u64 = 0;
    for b in digits {
        let d = (*b as char)
            .to_digit(16)
            .ok_or_else(|| invalid("invalid chunk size"))?;
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or_else(|| invalid("chunk size overflow"))?;
    }
    Ok(size)
}

impl Body for ModelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(framing) = this.framing else {
                return Poll::Ready(None);
            };
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            match framing {
                Framing::Length(left) => {
                    let (data, left) = match ready!(connection.poll_take(cx, left)) {
                        Ok(taken) => taken,
                        Err(e) => return this.broken(e),
                    };
                    if left == 0 {
                        this.finish();
                    } else {
                        this.framing = Some(Framing::Length(left));
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Close => {
                    if connection.buffer.is_empty() {
                        match ready!(connection.poll_fill(cx)) {
                            Ok(0) => {
                                this.framing = None;
                                this.connection = None;
                                return Poll::Ready(None);
                            }
                            Ok(_) => {}
                            Err(e) => return this.broken(e),
                        }
                    }
                    let data = connection.buffer.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(Chunk::Size) => {
                    let line = match ready!(this.poll_line(cx)) {
                        Ok(line) => line,
                        Err(e) => return this.broken(e),
                    };
                    let size = match chunk_size(&line) {
                        Ok(size) => size,
                        Err(e) => return this.broken(e),
                    };
                    this.framing = Some(Framing::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    }));
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    let (data, left) = match ready!(connection.poll_take(cx, left)) {
                        Ok(taken) => taken,
                        Err(e) => return this.broken(e),
                    };
                    this.framing = Some(Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    }));
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(Chunk::DataEnd) => match ready!(this.poll_line(cx)) {
                    Ok(line) if line.is_empty() => {
                        this.framing = Some(Framing::Chunked(Chunk::Size))
                    }
                    Ok(_) => return this.broken(invalid("chunk data longer than its size")),
                    Err(e) => return this.broken(e),
                },
                Framing::Chunked(Chunk::Trailers) => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(&connection.buffer, &mut fields) {
                        Ok(httparse::Status::Complete((length, fields))) => {
                            let mut trailers = HeaderMap::new();
                            for f in fields {
                                if let (Ok(name), Ok(value)) = (
                                    HeaderName::from_bytes(f.name.as_bytes()),
                                    HeaderValue::from_bytes(f.value),
                                ) {
                                    trailers.append(name, value);
                                }
                            }
                            connection.buffer.advance(length);
                            this.finish();
                            if !trailers.is_empty() {
                                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                            }
                            return Poll::Ready(None);
                        }
                        Ok(httparse::Status::Partial) => {
                            if connection.buffer.len() > MAX_CHUNK_LINE {
                                return this.broken(invalid("trailers too long"));
                            }
                            match ready!(connection.poll_fill(cx)) {
                                Ok(0) => {
                                    return this.broken(io::ErrorKind::UnexpectedEof.into());
                                }
                                Ok(_) => {}
                                Err(e) => return this.broken(e),
                            }
                        }
                        Err(_) => return this.broken(invalid("malformed trailers")),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            None => SizeHint::with_exact(0),
            Some(Framing::Length(left)) => SizeHint::with_exact(left),
            Some(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, method: &Method) -> Result<Option<ResponseHead>, SendError> {
        parse_head(&mut BytesMut::from(raw), method)
    }

    #[test]
    fn requests_carry_content_length_only_with_a_body() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, HeaderValue::from_static("m:8080"));
        let uri: Uri = "/predict?x=1".parse().unwrap();
        let wire = encode_request(&Method::POST, &uri, &headers, b"{}");
        assert_eq!(
            wire,
            b"POST /predict?x=1 HTTP/1.1\r\nhost: m:8080\r\ncontent-length: 2\r\n\r\n{}"
        );
        let wire = encode_request(&Method::GET, &uri, &headers, b"");
        assert_eq!(wire, b"GET /predict?x=1 HTTP/1.1\r\nhost: m:8080\r\n\r\n");
    }

    #[test]
    fn response_heads_are_framed_as_rfc_9112_says() {
        let framing_of = |raw: &str, method: &Method| {
            let h = head(raw, method)
                .ok()
                .flatten()
                .map(|h| (h.framing, h.keep_alive));
            h.unwrap()
        };
        assert_eq!(
            framing_of(
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                &Method::POST
            ),
            (Some(Framing::Length(5)), true)
        );
        assert_eq!(
            framing_of(
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                &Method::HEAD
            ),
            (None, true)
        );
        assert_eq!(
            framing_of(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                &Method::GET
            ),
            (Some(Framing::Chunked(Chunk::Size)), true)
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\n\r\n", &Method::GET),
            (Some(Framing::Close), false)
        );
        assert_eq!(
            framing_of("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", &Method::GET),
            (Some(Framing::Length(1)), false)
        );
        assert_eq!(
            framing_of(
                "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n",
                &Method::GET
            ),
            (Some(Framing::Length(1)), true)
        );
        assert_eq!(
            framing_of(
                "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n",
                &Method::GET
            ),
            (None, false)
        );
        // Informational responses are skipped.
        let h = head(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
            &Method::POST,
        )
        .ok()
        .flatten()
        .unwrap();
        assert_eq!(h.status, StatusCode::CREATED);
        assert!(h.reason().is_none());
        assert!(
            h.to_parts()
                .extensions
                .get::<hyper::ext::ReasonPhrase>()
                .is_none()
        );
        let h = head(
            "HTTP/1.1 200 Fine\r\ncontent-length: 0\r\n\r\n",
            &Method::GET,
        )
        .ok()
        .flatten()
        .unwrap();
        assert_eq!(
            h.to_parts()
                .extensions
                .get::<hyper::ext::ReasonPhrase>()
                .map(|r| r.as_bytes()),
            Some(&b"Fine"[..])
        );
        assert_eq!(h.reason(), Some(&b"Fine"[..]));
        let h = head(
            "HTTP/1.1 200 OK\r\nX-Model: fraud\r\nset-cookie: a\r\nset-cookie: b\r\ncontent-length: 0\r\n\r\n",
            &Method::GET,
        )
        .ok()
        .flatten()
        .unwrap();
        assert_eq!(
            h.headers().collect::<Vec<_>>(),
            [
                (&b"X-Model"[..], &b"fraud"[..]),
                (b"set-cookie", b"a"),
                (b"set-cookie", b"b"),
                (b"content-length", b"0")
            ]
        );
        let parts = h.to_parts();
        assert_eq!(parts.headers["x-model"], "fraud");
        assert_eq!(parts.headers.get_all("set-cookie").iter().count(), 2);
        assert_eq!(h.content_length, Some(0));
        assert!(head("HTTP/1.1 200 OK\r\ncontent-le", &Method::GET).is_ok_and(|h| h.is_none()));
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(
                matches!(head(bad, &Method::GET), Err(SendError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn chunk_sizes_are_hex_with_extensions_ignored() {
        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"0;name=value").unwrap(), 0);
        assert_eq!(chunk_size(b"FF ").unwrap(), 255);
        assert!(chunk_size(b"").is_err());
        assert!(chunk_size(b"zz").is_err());
        assert!(chunk_size(b"11111111111111111").is_err());
    }
}
