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

use bytes::{Bytes, BytesMut};
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
use super::proxy::{Proxy, ProxyBody};

/// How late a connection's timers may fire: they are moved only when they would fire before
/// the deadline or more than this after it, so a busy connection moves each about twice a
/// second instead of arming and dropping one per request.
pub const TIMER_SLACK: Duration = Duration::from_millis(500);
/// Largest request head the fast path reads; larger ones go to hyper (which answers 431).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header lines the fast path parses; more go to hyper.
const MAX_HEADERS: usize = 64;
/// What each read asks for (a typical request fits, so one read takes it whole).
const READ_CHUNK: usize = 16 * 1024;
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

/// A parsed request head: its length, its body's, and what the fast path needs of it.
#[derive(Debug, PartialEq)]
struct Head {
    length: usize,
    body: usize,
    close: bool,
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
    let max_body = proxy.settings.max_body_bytes;
    loop {
        // The next request's head.
        let head = loop {
            match parse(&conn.buffer, max_body) {
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
        let raw = conn.buffer.split_to(head.length).freeze();
        let Ok(parts) = request_parts(&raw) else {
            let _ = conn.respond(bad_request(), false, true).await;
            return;
        };
        drop(raw);
        let is_head = parts.method == Method::HEAD;
        // Refused before its body is read (401, or 413 for a feedback body): the body is
        // left unread, so the connection closes after the answer.
        if let Some(refused) = proxy.screen(&parts, started) {
            let _ = conn.respond(refused, is_head, true).await;
            let _ = conn.stream.shutdown().await;
            return;
        }
        // The body, taken out of the buffer without a copy.
        while conn.buffer.len() < head.body {
            conn.arm_client(HEADER_READ_TIMEOUT);
            if !matches!(conn.fill(false).await, Read::More) {
                return;
            }
        }
        let body = conn.buffer.split_to(head.body).freeze();
        conn.arm_model(proxy.settings.upstream_timeout, started);
        let answer = proxy
            .answer(parts, body, started, conn.model_timer.as_mut())
            .await;
        let close =
            head.close || conn.drained.is_some() || proxy.terminating.load(Ordering::Relaxed);
        if conn.respond(answer, is_head, close).await.is_err() || close {
            let _ = conn.stream.shutdown().await;
            return;
        }
    }
}

/// Whether a request head is complete, and whether the fast path serves it.
fn parse(buffer: &[u8], max_body: usize) -> Parsed {
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
    if request.version != Some(1)
        || request.method == Some("CONNECT")
        || !request.path.is_some_and(|p| p.starts_with('/'))
    {
        return Parsed::HandOver;
    }
    let mut body = None;
    let mut close = false;
    for h in request.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok());
            match (n, body) {
                (Some(n), None) if n <= max_body => body = Some(n),
                // Repeated, malformed or over the limit: hyper answers 400 or 413.
                _ => return Parsed::HandOver,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Parsed::HandOver;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= h
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    if length > MAX_HEAD_BYTES {
        return Parsed::HandOver;
    }
    Parsed::Request(Head {
        length,
        body: body.unwrap_or(0),
        close,
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
        let bodiless = head_request
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let size = body.size_hint().exact();
        let chunked = !bodiless && size.is_none();
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
            Some(reason) => out.extend_from_slice(reason.as_bytes()),
            None => out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            // Framing is the fast path's to say (from the body), except for bodiless answers,
            // whose content-length (a HEAD's) passes as the model sent it.
            if (!bodiless && name == header::CONTENT_LENGTH)
                || name == header::TRANSFER_ENCODING
                || name == header::CONNECTION
            {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !parts.headers.contains_key(header::DATE) {
            out.extend_from_slice(b"date: ");
            out.extend_from_slice(&http_date());
            out.extend_from_slice(b"\r\n");
        }
        if chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        } else if let (false, Some(n)) = (bodiless, size) {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let result = if bodiless {
            self.write(&out).await
        } else {
            self.write_body(&mut out, &mut body, chunked).await
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

    fn head(raw: &str) -> Parsed {
        parse(raw.as_bytes(), 1024)
    }

    #[test]
    fn plain_keep_alive_requests_take_the_fast_path() {
        assert_eq!(
            head("POST /predict HTTP/1.1\r\nhost: m\r\ncontent-length: 2\r\n\r\n{}"),
            Parsed::Request(Head {
                length: 54,
                body: 2,
                close: false
            })
        );
        assert_eq!(
            head("GET /x HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n"),
            Parsed::Request(Head {
                length: 50,
                body: 0,
                close: true
            })
        );
        assert_eq!(
            head("POST /predict HTTP/1.1\r\nhost: m\r\n"),
            Parsed::Partial
        );
        assert_eq!(head(""), Parsed::Partial);
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
}
