//! The serving port's connections: a fast path for plain HTTP/1.1 requests, hyper for the rest.
//!
//! Nearly every request a model server gets is the same shape: HTTP/1.1 on a kept-alive
//! connection, a JSON body with a `content-length`, a handful of headers. For those the
//! monitor reads the head itself ([`httparse`]), takes the body out of the read buffer without
//! copying it, hands both to [`Proxy::answer`] and writes the answer's head and body in one
//! write. A connection keeps two timers for all its requests (one for the client, one for the
//! model) and moves them only when they would fire too early or more than [`TIMER_SLACK`]
//! late, instead of arming a timer per request. In `benches/proxy` this took about a tenth of
//! the CPU a proxied request cost when hyper's server read and wrote every request.
//!
//! Anything else goes to hyper's server with the bytes read so far, for the rest of the
//! connection: HTTP/2 with prior knowledge (h2c), HTTP/1.0, chunked or otherwise encoded
//! uploads, `Expect: 100-continue`, `Upgrade`, `CONNECT`, absolute-form targets, heads that
//! do not parse or are too large, bodies declared over the limit (hyper's path answers 413
//! or 400 as it always did). So the fast path only ever sees what it fully understands, and
//! every other request is answered exactly as before.
//!
//! What hyper's server did and the fast path keeps: keep-alive unless the client sends
//! `Connection: close`, pipelined requests answered in order, a `date` header on every
//! response that has none, `content-length` from the body (chunked when its size is not
//! known), no body for `HEAD`, 1xx, 204 and 304, a non-canonical reason phrase
//! ([`hyper::ext::ReasonPhrase`]) kept, a request head that does not arrive within
//! [`HEADER_READ_TIMEOUT`] closing the connection, idle connections closed at once when the
//! monitor drains and busy ones after their answer (`Connection: close`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Sleep;

use super::HEADER_READ_TIMEOUT;
use super::feedback::TOKEN_HEADER;
use super::proxy::{
    Answer, FEEDBACK_PATH, ModelAnswer, Outgoing, Proxy, ProxyBody, is_hop_by_hop,
    without_path_prefix,
};
use super::upstream::{decimal, has_token};

/// How late a connection's timers may fire: they are moved only when they would fire before
/// the deadline or more than this after it, so a busy connection moves each about twice a
/// second instead of arming and dropping one per request.
pub const TIMER_SLACK: Duration = Duration::from_millis(500);
/// Largest request head the fast path reads; larger ones go to hyper (which answers 431).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header lines the fast path parses; more go to hyper.
const MAX_HEADERS: usize = 64;
/// What each read asks for (a typical request fits, so one read takes it whole; hyper's
/// server starts its read buffer at the same size).
const READ_CHUNK: usize = 8 * 1024;
/// Buffers grown past this by a large request are let go once it is answered, so a
/// kept-alive connection does not hold a large upload's memory while idle.
const KEEP_BUFFER_BYTES: usize = 64 * 1024;
/// Bodies up to this size are copied behind the head so both go out in one write.
const COALESCE_BYTES: usize = 64 * 1024;

/// Shared by every connection of the serving port.
pub struct Serving {
    /// The proxy every request goes to.
    pub proxy: Arc<Proxy>,
    /// hyper's server, for what the fast path hands over.
    pub hyper: auto::Builder<TokioExecutor>,
}

/// A connection's end, as the loop sees it.
enum Read {
    /// Bytes were added to the buffer.
    More,
    /// The client closed, the read failed, or the timer fired: drop the connection.
    Gone,
    /// The monitor drains and the connection is between requests: close it.
    Drained,
}

/// What the head at the start of the buffer is.
#[derive(Debug, PartialEq)]
enum Parsed {
    /// Not all there yet.
    Partial,
    /// Not for the fast path: hand the connection to hyper.
    HandOver,
    /// A request the fast path serves.
    Request(Head),
}

/// A parsed request head: its length, its body's, and what the fast path needs of it
/// (spans are offsets into the read buffer).
#[derive(Debug, PartialEq)]
struct Head {
    length: usize,
    body: usize,
    close: bool,
    method: Method,
    path: (usize, usize),
    authorization: Option<(usize, usize)>,
    api_key: Option<(usize, usize)>,
    /// Encoded into the wire buffer (request line and headers, up to the blank line); when
    /// false the request goes the general way ([`Proxy::answer`]).
    encoded: bool,
}

impl Head {
    fn slice<'a>(&self, buffer: &'a [u8], span: (usize, usize)) -> &'a [u8] {
        &buffer[span.0..span.0 + span.1]
    }
}

/// Serves one plaintext connection until it closes, the client asks to, or the monitor
/// drains; `draining` turns true when it does (the connection holds it until it ends, which
/// is what the drain waits for).
pub async fn connection(serving: Arc<Serving>, stream: TcpStream, draining: watch::Receiver<bool>) {
    let mut draining = draining;
    let mut conn = Conn {
        stream,
        buffer: BytesMut::with_capacity(READ_CHUNK),
        out: Vec::with_capacity(1024),
        client_timer: Box::pin(tokio::time::sleep(HEADER_READ_TIMEOUT)),
        model_timer: Box::pin(tokio::time::sleep(serving.proxy.settings.upstream_timeout)),
        // Registered once for the connection's life: waiting between requests costs no
        // allocation or registration per request. It hands the receiver back when the
        // signal comes, and the connection holds it to its end (what the drain waits for).
        drain: Some(Box::pin(async move {
            let _ = draining.wait_for(|d| *d).await;
            draining
        })),
        drained: None,
    };
    let proxy = &serving.proxy;
    let rules = Rules::of(proxy);
    let mut wire = Vec::with_capacity(1024);
    loop {
        // The next request's head.
        let head = loop {
            match parse(&conn.buffer, &rules, &mut wire) {
                Parsed::Request(head) => break head,
                Parsed::HandOver => return hand_over(serving, conn).await,
                Parsed::Partial => {}
            }
            let idle = conn.buffer.is_empty();
            conn.arm_client(HEADER_READ_TIMEOUT);
            match conn.fill(idle).await {
                Read::More => {}
                Read::Gone | Read::Drained => return,
            }
        };
        let started = Instant::now();
        let is_head = head.method == Method::HEAD;
        // Refused before its body is read: the body is left unread, so the connection closes
        // after the answer.
        let key = |span| head.slice(&conn.buffer, span);
        if let Some(refused) =
            proxy.check_key(head.authorization.map(key), head.api_key.map(key), started)
        {
            let _ = conn.respond(refused, is_head, true).await;
            let _ = conn.stream.shutdown().await;
            return;
        }
        // The body.
        while conn.buffer.len() < head.length + head.body {
            conn.arm_client(HEADER_READ_TIMEOUT);
            if !matches!(conn.fill(false).await, Read::More) {
                return;
            }
        }
        conn.arm_model(proxy.settings.upstream_timeout, started);
        let answer = if head.encoded {
            let body = &conn.buffer[head.length..head.length + head.body];
            wire.extend_from_slice(body);
            let path = std::str::from_utf8(head.slice(&conn.buffer, head.path)).unwrap_or("/");
            let request = Outgoing {
                method: &head.method,
                path,
                wire: &wire,
                body,
            };
            let answer = proxy
                .forward(request, started, conn.model_timer.as_mut())
                .await;
            conn.buffer.advance(head.length + head.body);
            answer
        } else {
            // Feedback, or a model behind a path prefix: the general way.
            let raw = conn.buffer.split_to(head.length).freeze();
            let body = conn.buffer.split_to(head.body).freeze();
            let Ok(parts) = request_parts(&raw) else {
                let _ = conn.respond(bad_request(), false, true).await;
                return;
            };
            if let Some(refused) = proxy.screen(&parts, started) {
                Answer::Made(refused)
            } else {
                proxy
                    .answer(parts, body, started, conn.model_timer.as_mut())
                    .await
            }
        };
        let close =
            head.close || conn.drained.is_some() || proxy.terminating.load(Ordering::Relaxed);
        let written = match answer {
            Answer::Made(response) => conn.respond(response, is_head, close).await,
            Answer::Model(model) => conn.respond_model(&model, is_head, close).await,
        };
        if written.is_err() || close {
            let _ = conn.stream.shutdown().await;
            return;
        }
        if conn.buffer.is_empty() && conn.buffer.capacity() > KEEP_BUFFER_BYTES {
            conn.buffer = BytesMut::new();
        }
        if wire.capacity() > KEEP_BUFFER_BYTES {
            wire = Vec::with_capacity(1024);
        }
        if conn.out.capacity() > KEEP_BUFFER_BYTES {
            conn.out = Vec::with_capacity(1024);
        }
    }
}

/// What [`parse`] needs to know of the proxy.
struct Rules<'a> {
    /// Largest body (larger ones go to hyper, which answers 413).
    max_body: usize,
    /// `host` for requests without one.
    host: &'a [u8],
    /// The upstream has no path prefix: request targets go to the model as they are.
    plain_upstream: bool,
    /// `POST /drover/feedback` is the monitor's own.
    feedback: bool,
}

impl<'a> Rules<'a> {
    fn of(proxy: &'a Proxy) -> Self {
        Rules {
            max_body: proxy.settings.max_body_bytes,
            host: proxy.upstream.host().as_bytes(),
            plain_upstream: without_path_prefix(&proxy.settings.upstream),
            feedback: proxy.settings.feedback.is_some(),
        }
    }
}

/// Whether a request head is complete, and whether the fast path serves it. A request the
/// model gets as it is has its request line and headers encoded into `wire` here (hop-by-hop
/// headers and `content-length` dropped, `host` added when missing, then the body's
/// `content-length`), up to the blank line: the body follows when it has arrived.
fn parse(buffer: &[u8], rules: &Rules<'_>, wire: &mut Vec<u8>) -> Parsed {
    if buffer.is_empty() {
        return Parsed::Partial;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(buffer) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buffer.len() <= MAX_HEAD_BYTES => {
            return Parsed::Partial;
        }
        // Too large, too many headers, not HTTP/1.x (the HTTP/2 preface included): hyper
        // answers or serves it.
        _ => return Parsed::HandOver,
    };
    let (Some(method), Some(path)) = (request.method, request.path) else {
        return Parsed::HandOver;
    };
    if request.version != Some(1)
        || length > MAX_HEAD_BYTES
        || method == "CONNECT"
        || !path.starts_with('/')
    {
        return Parsed::HandOver;
    }
    let Ok(method_value) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::HandOver;
    };
    let base = buffer.as_ptr() as usize;
    let span = |b: &[u8]| (b.as_ptr() as usize - base, b.len());
    let mut body = None;
    let mut close = false;
    let mut has_host = false;
    let mut authorization = None;
    let mut api_key = None;
    // Headers named in Connection are hop-by-hop too; nearly always it only names
    // keep-alive or close, and then nothing is collected.
    let mut named: Vec<&[u8]> = Vec::new();
    for h in request.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = decimal(h.value).and_then(|n| usize::try_from(n).ok());
            match (n, body) {
                (Some(n), None) if n <= rules.max_body => body = Some(n),
                // Repeated, malformed or over the limit: hyper answers 400 or 413.
                _ => return Parsed::HandOver,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Parsed::HandOver;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= has_token(h.value, b"close");
            named.extend(connection_named(h.value));
        } else if name.eq_ignore_ascii_case(b"host") {
            has_host = true;
        } else if name.eq_ignore_ascii_case(b"authorization") {
            authorization = authorization.or(Some(span(h.value)));
        } else if name.eq_ignore_ascii_case(b"x-api-key") {
            api_key = api_key.or(Some(span(h.value)));
        }
    }
    let body = body.unwrap_or(0);
    let encoded = rules.plain_upstream
        && !(rules.feedback && method == "POST" && path.split('?').next() == Some(FEEDBACK_PATH));
    if encoded {
        wire.clear();
        wire.extend_from_slice(method.as_bytes());
        wire.push(b' ');
        wire.extend_from_slice(path.as_bytes());
        wire.extend_from_slice(b" HTTP/1.1\r\n");
        for h in request.headers.iter() {
            let name = h.name.as_bytes();
            if is_hop_by_hop(name)
                || name.eq_ignore_ascii_case(b"content-length")
                || named.iter().any(|n| n.eq_ignore_ascii_case(name))
            {
                continue;
            }
            wire.extend_from_slice(name);
            wire.extend_from_slice(b": ");
            wire.extend_from_slice(h.value);
            wire.extend_from_slice(b"\r\n");
        }
        if !has_host {
            wire.extend_from_slice(b"host: ");
            wire.extend_from_slice(rules.host);
            wire.extend_from_slice(b"\r\n");
        }
        if body > 0 {
            wire.extend_from_slice(b"content-length: ");
            wire.extend_from_slice(itoa::Buffer::new().format(body).as_bytes());
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"\r\n");
    }
    Parsed::Request(Head {
        length,
        body,
        close,
        method: method_value,
        path: span(path.as_bytes()),
        authorization,
        api_key,
        encoded,
    })
}

/// The request's method, target and headers, the values sharing `raw`'s memory. `Err` for a
/// target or header the `http` types refuse (the fast path then answers 400, as hyper does).
fn request_parts(raw: &Bytes) -> Result<http::request::Parts, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(raw), Ok(httparse::Status::Complete(_))) {
        return Err(());
    }
    let method = Method::from_bytes(request.method.ok_or(())?.as_bytes()).map_err(|_| ())?;
    let path = request.path.ok_or(())?;
    let uri = Uri::from_maybe_shared(raw.slice_ref(path.as_bytes())).map_err(|_| ())?;
    let mut map = HeaderMap::with_capacity(request.headers.len());
    for h in request.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| ())?;
        let value = HeaderValue::from_maybe_shared(raw.slice_ref(h.value)).map_err(|_| ())?;
        map.append(name, value);
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = map;
    Ok(parts)
}

fn bad_request() -> Response<ProxyBody> {
    let mut r = Response::new(
        http_body_util::Full::new(Bytes::from_static(b""))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r
}

/// The rest of a connection on hyper's server, starting with the bytes read so far.
async fn hand_over(serving: Arc<Serving>, conn: Conn) {
    let Conn {
        stream,
        buffer,
        drain,
        drained,
        ..
    } = conn;
    let io = Rewind {
        prefix: buffer.freeze(),
        stream,
    };
    let proxy = serving.proxy.clone();
    let service = service_fn(move |req| proxy.clone().handle(req));
    let connection = serving
        .hyper
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    let mut connection = std::pin::pin!(connection);
    // Held until the connection ends, like the fast path's.
    let _guard = match (drain, drained) {
        (Some(drain), _) => {
            tokio::select! {
                _ = connection.as_mut() => return,
                guard = drain => guard,
            }
        }
        (None, Some(guard)) => guard,
        (None, None) => return,
    };
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// One client connection on the fast path.
struct Conn {
    stream: TcpStream,
    /// Read from the client and not consumed yet.
    buffer: BytesMut,
    /// The response being written.
    out: Vec<u8>,
    /// Fires when the client has taken too long (head, body, or reading the answer).
    client_timer: Pin<Box<Sleep>>,
    /// Fires when the model has taken too long ([`Proxy::answer`] answers 504).
    model_timer: Pin<Box<Sleep>>,
    /// Resolves when the monitor drains (taken once it has).
    drain: Option<Pin<Box<dyn Future<Output = watch::Receiver<bool>> + Send>>>,
    /// The drain signal came: its receiver, held to the connection's end.
    drained: Option<watch::Receiver<bool>>,
}

/// Moves `timer` so it fires between `at` and `at + TIMER_SLACK`, unless it already does.
fn arm(timer: Pin<&mut Sleep>, at: tokio::time::Instant) {
    let deadline = timer.deadline();
    if deadline < at || deadline > at + TIMER_SLACK {
        timer.reset(at + TIMER_SLACK / 2);
    }
}

impl Conn {
    fn arm_client(&mut self, within: Duration) {
        arm(
            self.client_timer.as_mut(),
            tokio::time::Instant::now() + within,
        );
    }

    fn arm_model(&mut self, within: Duration, started: Instant) {
        // Early rather than late: the model's deadline counts from when the request arrived.
        arm(
            self.model_timer.as_mut(),
            tokio::time::Instant::from_std(started) + within.saturating_sub(TIMER_SLACK / 2),
        );
    }

    /// Reads more from the client; `idle` (between requests): the drain signal ends the
    /// wait too.
    async fn fill(&mut self, idle: bool) -> Read {
        if idle && self.drained.is_some() {
            return Read::Drained;
        }
        self.buffer.reserve(READ_CHUNK);
        std::future::poll_fn(|cx| {
            let read = self.stream.read_buf(&mut self.buffer);
            // The read future only borrows the stream and the buffer: polling it once and
            // dropping it when pending loses nothing (the waker stays with the runtime).
            if let Poll::Ready(r) = std::pin::pin!(read).poll(cx) {
                return Poll::Ready(match r {
                    Ok(0) | Err(_) => Read::Gone,
                    Ok(_) => Read::More,
                });
            }
            // The signal is watched while busy too, so it is noticed before the answer.
            if let Some(drain) = self.drain.as_mut()
                && let Poll::Ready(guard) = drain.as_mut().poll(cx)
            {
                self.drain = None;
                self.drained = Some(guard);
                if idle {
                    return Poll::Ready(Read::Drained);
                }
            }
            if self.client_timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Read::Gone);
            }
            Poll::Pending
        })
        .await
    }

    /// Writes `bytes` unless the client stops reading for [`HEADER_READ_TIMEOUT`].
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.arm_client(HEADER_READ_TIMEOUT);
        let stream = &mut self.stream;
        let timer = self.client_timer.as_mut();
        tokio::select! {
            biased;
            r = stream.write_all(bytes) => r,
            () = timer => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Writes `response`: head and (small) body in one write, `content-length` from the
    /// body, chunked when its size is not known.
    async fn respond(
        &mut self,
        response: Response<ProxyBody>,
        head_request: bool,
        close: bool,
    ) -> io::Result<()> {
        let (parts, mut body) = response.into_parts();
        let status = parts.status;
        let bodiless = bodiless(status, head_request);
        let size = body.size_hint().exact();
        let chunked = !bodiless && size.is_none();
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let reason = parts
            .extensions
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| r.as_bytes());
        status_line(&mut out, status, reason);
        for (name, value) in &parts.headers {
            // Framing is the fast path's to say (from the body), except for bodiless answers,
            // whose content-length (a HEAD's) passes as the model sent it.
            if (!bodiless && name == header::CONTENT_LENGTH)
                || name == header::TRANSFER_ENCODING
                || name == header::CONNECTION
            {
                continue;
            }
            header_line(&mut out, name.as_str().as_bytes(), value.as_bytes());
        }
        let framing = match (bodiless, size) {
            (true, _) => Framing::None,
            (false, Some(n)) => Framing::Length(n),
            (false, None) => Framing::Chunked,
        };
        head_end(
            &mut out,
            parts.headers.contains_key(header::DATE),
            framing,
            close,
        );
        let result = if bodiless {
            self.write(&out).await
        } else {
            self.write_body(&mut out, &mut body, chunked).await
        };
        self.out = out;
        result
    }

    /// Writes the model's read answer: its header lines as the model sent them (hop-by-hop
    /// ones and `content-length` dropped), the token, then head and body in one write.
    async fn respond_model(
        &mut self,
        answer: &ModelAnswer,
        head_request: bool,
        close: bool,
    ) -> io::Result<()> {
        let status = answer.head.status;
        let bodiless = bodiless(status, head_request);
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        status_line(&mut out, status, answer.head.reason());
        // Headers named in Connection are hop-by-hop too (nearly always none is).
        let mut named: Vec<&[u8]> = Vec::new();
        for (name, value) in answer.head.headers() {
            if name.eq_ignore_ascii_case(b"connection") {
                named.extend(connection_named(value));
            }
        }
        let mut has_date = false;
        for (name, value) in answer.head.headers() {
            if is_hop_by_hop(name)
                || (!bodiless && name.eq_ignore_ascii_case(b"content-length"))
                || named.iter().any(|n| n.eq_ignore_ascii_case(name))
            {
                continue;
            }
            has_date |= name.eq_ignore_ascii_case(b"date");
            header_line(&mut out, name, value);
        }
        if let Some(token) = &answer.token {
            header_line(&mut out, TOKEN_HEADER.as_bytes(), token.as_bytes());
        }
        let framing = if bodiless {
            Framing::None
        } else {
            Framing::Length(answer.body.len() as u64)
        };
        head_end(&mut out, has_date, framing, close);
        let result = if bodiless || answer.body.len() > COALESCE_BYTES {
            let written = self.write(&out).await;
            match written {
                Ok(()) if !bodiless => self.write(&answer.body).await,
                other => other,
            }
        } else {
            out.extend_from_slice(&answer.body);
            self.write(&out).await
        };
        self.out = out;
        result
    }

    /// Writes the head in `out` and then the body's frames.
    async fn write_body(
        &mut self,
        out: &mut Vec<u8>,
        body: &mut ProxyBody,
        chunked: bool,
    ) -> io::Result<()> {
        let mut head_pending = true;
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            let frame = match frame.into_data() {
                Ok(data) => {
                    if data.is_empty() {
                        continue;
                    }
                    if chunked {
                        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    }
                    if out.len() + data.len() <= COALESCE_BYTES {
                        out.extend_from_slice(&data);
                    } else {
                        self.write(out).await?;
                        out.clear();
                        self.write(&data).await?;
                    }
                    if chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                    if !out.is_empty() {
                        self.write(out).await?;
                        out.clear();
                    }
                    head_pending = false;
                    continue;
                }
                Err(frame) => frame,
            };
            if chunked && let Ok(trailers) = frame.into_trailers() {
                out.extend_from_slice(b"0\r\n");
                for (name, value) in &trailers {
                    out.extend_from_slice(name.as_str().as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(value.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"\r\n");
                self.write(out).await?;
                out.clear();
                return Ok(());
            }
        }
        if chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        if head_pending || !out.is_empty() {
            self.write(out).await?;
            out.clear();
        }
        Ok(())
    }
}

/// Whether an answer goes without a body (RFC 9112 §6.3): to HEAD, and 1xx, 204 and 304.
fn bodiless(status: StatusCode, head_request: bool) -> bool {
    head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// The header names a `Connection` value lists besides `keep-alive` and `close`: hop-by-hop
/// too, so they are not passed on.
fn connection_named(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"keep-alive")
                && !t.eq_ignore_ascii_case(b"close")
        })
}

/// How a response's body is framed on the wire.
enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    /// `content-length`.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
}

fn status_line(out: &mut Vec<u8>, status: StatusCode, reason: Option<&[u8]>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match reason {
        Some(reason) => out.extend_from_slice(reason),
        None => out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
}

fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The end of a response head: `date` unless there is one, the framing, `connection: close`
/// when the connection ends with this answer, the blank line.
fn head_end(out: &mut Vec<u8>, has_date: bool, framing: Framing, close: bool) {
    if !has_date {
        header_line(out, b"date", &http_date());
    }
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            header_line(
                out,
                b"content-length",
                itoa::Buffer::new().format(n).as_bytes(),
            );
        }
        Framing::Chunked => header_line(out, b"transfer-encoding", b"chunked"),
    }
    if close {
        header_line(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

/// `date` as RFC 9110 §5.6.7 writes it, formatted once a second per thread.
fn http_date() -> [u8; 29] {
    use std::cell::Cell;
    thread_local! {
        static CACHED: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
    }
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let (at, value) = cached.get();
        if at == second {
            return value;
        }
        let mut value = [b' '; 29];
        let formatted = httpdate::fmt_http_date(now);
        let n = formatted.len().min(29);
        value[..n].copy_from_slice(&formatted.as_bytes()[..n]);
        cached.set((second, value));
        value
    })
}

/// A stream that first yields bytes already read from it (what hyper is handed).
struct Rewind {
    prefix: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let taken = self.prefix.split_to(n);
            buf.put_slice(&taken);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules<'static> = Rules {
        max_body: 1024,
        host: b"127.0.0.1:8080",
        plain_upstream: true,
        feedback: true,
    };

    fn parsed(raw: &str) -> (Parsed, Vec<u8>) {
        let mut wire = Vec::new();
        (parse(raw.as_bytes(), &RULES, &mut wire), wire)
    }

    fn head(raw: &str) -> Parsed {
        parsed(raw).0
    }

    fn fast(raw: &str) -> (Head, String) {
        match parsed(raw) {
            (Parsed::Request(head), wire) => (head, String::from_utf8(wire).unwrap()),
            (other, _) => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn plain_keep_alive_requests_take_the_fast_path_and_are_encoded_for_the_model() {
        let raw = "POST /predict?x=1 HTTP/1.1\r\nHost: m\r\nContent-Length: 2\r\nConnection: keep-alive, X-Trace\r\nX-Trace: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Api-Key: k\r\nAuthorization: Bearer t\r\n\r\n{}";
        let (head, wire) = fast(raw);
        assert_eq!(head.length, raw.len() - 2);
        assert_eq!(head.body, 2);
        assert!(!head.close);
        assert_eq!(head.method, Method::POST);
        assert!(head.encoded);
        assert_eq!(head.slice(raw.as_bytes(), head.path), b"/predict?x=1");
        assert_eq!(
            head.authorization.map(|s| head.slice(raw.as_bytes(), s)),
            Some(&b"Bearer t"[..])
        );
        assert_eq!(
            head.api_key.map(|s| head.slice(raw.as_bytes(), s)),
            Some(&b"k"[..])
        );
        // Hop-by-hop headers, those Connection names and content-length are dropped; the
        // body's content-length ends the head (the body follows once read).
        assert_eq!(
            wire,
            "POST /predict?x=1 HTTP/1.1\r\nHost: m\r\nX-Api-Key: k\r\nAuthorization: Bearer t\r\ncontent-length: 2\r\n\r\n"
        );
        let (head, wire) = fast("GET /x HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(head.close);
        assert_eq!(head.body, 0);
        assert_eq!(wire, "GET /x HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\r\n");
        // Feedback is the monitor's: parsed, not encoded.
        let (feedback, wire) =
            fast("POST /drover/feedback HTTP/1.1\r\nhost: m\r\ncontent-length: 2\r\n\r\n{}");
        assert!(!feedback.encoded);
        assert!(wire.is_empty());
        assert_eq!(
            parsed("POST /predict HTTP/1.1\r\nhost: m\r\n").0,
            Parsed::Partial
        );
        assert_eq!(parsed("").0, Parsed::Partial);
    }

    #[test]
    fn everything_else_is_handed_to_hyper() {
        for raw in [
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n{}",
            "POST / HTTP/1.1\r\ncontent-length: +2\r\n\r\n{}",
            "POST / HTTP/1.1\r\ncontent-length: 2000\r\n\r\n",
            "POST / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n",
            "GET / HTTP/1.1\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n",
            "CONNECT m:80 HTTP/1.1\r\n\r\n",
            "GET http://m/x HTTP/1.1\r\n\r\n",
            "GET /\x01 HTTP/1.1\r\n\r\n",
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03",
        ] {
            assert_eq!(head(raw), Parsed::HandOver, "{raw:?}");
        }
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "a: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(head(&many), Parsed::HandOver);
        let huge = format!("GET / HTTP/1.1\r\nx: {}", "a".repeat(MAX_HEAD_BYTES + 1));
        assert_eq!(head(&huge), Parsed::HandOver);
    }

    #[test]
    fn request_parts_share_the_head() {
        let raw = Bytes::from_static(
            b"POST /v2/models/m/infer?x=1 HTTP/1.1\r\nHost: m\r\nX-Api-Key: k\r\nx-a: 1\r\nx-a: 2\r\n\r\n",
        );
        let parts = request_parts(&raw).unwrap();
        assert_eq!(parts.method, Method::POST);
        assert_eq!(parts.uri, "/v2/models/m/infer?x=1");
        assert_eq!(parts.headers["host"], "m");
        assert_eq!(parts.headers["x-api-key"], "k");
        assert_eq!(parts.headers.get_all("x-a").iter().count(), 2);
    }

    #[test]
    fn dates_are_imf_fixdate() {
        let date = http_date();
        let text = std::str::from_utf8(&date).unwrap();
        assert!(text.ends_with(" GMT"), "{text}");
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }

    #[tokio::test]
    async fn timers_move_only_when_they_would_fire_too_early_or_too_late() {
        let mut timer = Box::pin(tokio::time::sleep(Duration::from_secs(30)));
        let now = tokio::time::Instant::now();
        arm(timer.as_mut(), now + Duration::from_secs(10));
        let first = timer.deadline();
        assert!(first >= now + Duration::from_secs(10));
        assert!(first <= now + Duration::from_secs(10) + TIMER_SLACK);
        // Within the slack: untouched.
        arm(
            timer.as_mut(),
            now + Duration::from_secs(10) + TIMER_SLACK / 4,
        );
        assert_eq!(timer.deadline(), first);
        // Later than the slack allows: moved.
        arm(timer.as_mut(), now + Duration::from_secs(11));
        assert!(timer.deadline() >= now + Duration::from_secs(11));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const NAMES: &[&str] = &[
            "host",
            "content-type",
            "x-request-id",
            "authorization",
            "x-api-key",
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "proxy-authorization",
            "x-trace",
        ];

        fn header() -> impl Strategy<Value = (String, String)> {
            (
                prop::sample::select(NAMES).prop_map(str::to_string),
                "[a-zA-Z0-9 ,=/;.-]{0,24}",
            )
        }

        proptest! {
            /// Whatever bytes arrive, the head parser answers without panicking, and never
            /// claims more than the buffer holds.
            #[test]
            fn any_bytes_are_parsed_or_handed_over(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let mut wire = Vec::new();
                if let Parsed::Request(head) = parse(&bytes, &RULES, &mut wire) {
                    prop_assert!(head.length <= bytes.len());
                    prop_assert!(head.path.0 + head.path.1 <= head.length);
                }
            }

            /// A request the fast path takes goes to the model with the same request line and
            /// the same end-to-end headers in the same order; hop-by-hop ones, those its
            /// Connection names and content-length do not go, and the body's length does.
            #[test]
            fn end_to_end_headers_reach_the_model_in_order(
                headers in prop::collection::vec(header(), 0..8),
                body in "[a-z{}\":,0-9]{0,40}",
            ) {
                let mut raw = String::from("POST /predict?x=1 HTTP/1.1\r\n");
                for (name, value) in &headers {
                    raw.push_str(&format!("{name}: {value}\r\n"));
                }
                raw.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
                let mut wire = Vec::new();
                let Parsed::Request(head) = parse(raw.as_bytes(), &RULES, &mut wire) else {
                    return Err(TestCaseError::fail(format!("not taken: {raw:?}")));
                };
                prop_assert_eq!(head.body, body.len());
                let named: Vec<String> = headers
                    .iter()
                    .filter(|(n, _)| n == "connection")
                    .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()).collect::<Vec<_>>())
                    .collect();
                let mut expected = String::from("POST /predict?x=1 HTTP/1.1\r\n");
                for (name, value) in &headers {
                    let hop = is_hop_by_hop(name.as_bytes()) || named.iter().any(|n| n == name);
                    if !hop {
                        // httparse trims the value's surrounding whitespace.
                        expected.push_str(&format!("{name}: {}\r\n", value.trim_matches(' ')));
                    }
                }
                if !headers.iter().any(|(n, _)| n == "host") {
                    expected.push_str("host: 127.0.0.1:8080\r\n");
                }
                if !body.is_empty() {
                    expected.push_str(&format!("content-length: {}\r\n", body.len()));
                }
                expected.push_str("\r\n");
                prop_assert_eq!(String::from_utf8_lossy(&wire), expected);
            }
        }
    }
}
