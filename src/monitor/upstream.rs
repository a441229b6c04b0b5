//! Keep-alive HTTP/1.1 connections to the model on loopback.
//!
//! A stack of idle connections instead of hyper-util's general-purpose pooled client: the
//! monitor talks to one address over plain HTTP/1.1, so the pool needs no key, no connect race
//! and no background task. A request takes the most recently used idle connection (warm in
//! cache, least likely to have hit the model's idle timeout), or opens one, sends on it, and
//! puts it back once the response body has been read to the end. hyper-util's client spawned a
//! task per request to wait for the connection to be idle again and went through its checkout
//! machinery twice; here it is one uncontended lock to take and one to give back, which is
//! most of the CPU per request the switch saved in `benches/proxy`.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

/// How long an idle connection is reused: shorter than the keep-alive of common model servers
/// (uvicorn 5 s, gunicorn 2 s), so a connection the server is about to close is rarely taken.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most idle connections kept (hyper-util's `pool_max_idle_per_host` before).
pub const MAX_IDLE: usize = 1024;
/// TCP keep-alive probes on connections to the model.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

struct Idle {
    sender: SendRequest<Full<Bytes>>,
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
    Connect(std::io::Error),
    /// The connection failed; `unsent` when the request never went out.
    Http { error: hyper::Error, unsent: bool },
}

/// A connection taken for one request.
pub struct Taken {
    sender: SendRequest<Full<Bytes>>,
    /// Taken from the idle stack (it may have been closed by the model meanwhile).
    pub reused: bool,
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
        while !fresh && let Some(mut sender) = self.pop_idle(now) {
            // Ready at once unless the model closed it (then an error): the body of its last
            // response was read to the end before it was put back.
            if sender.ready().await.is_ok() {
                return Ok(Taken {
                    sender,
                    reused: true,
                });
            }
        }
        Ok(Taken {
            sender: self.connect().await?,
            reused: false,
        })
    }

    fn pop_idle(&self, now: Instant) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(i) = idle.pop() {
            if now.saturating_duration_since(i.since) >= IDLE_TIMEOUT {
                // The stack is in the order connections came back: the rest are older still.
                idle.clear();
                return None;
            }
            if !i.sender.is_closed() {
                return Some(i.sender);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, SendError> {
        let stream = tokio::net::TcpStream::connect(self.address.as_str())
            .await
            .map_err(SendError::Connect)?;
        let _ = stream.set_nodelay(true);
        let socket = socket2::SockRef::from(&stream);
        let _ = socket.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE));
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|error| SendError::Http {
                    error,
                    unsent: true,
                })?;
        // The connection's driver: ends when the model closes it or the sender is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends `request` on `taken`; the connection stays with the caller until
    /// [`Upstream::give_back`] (or [`Returning`] at the end of a streamed body).
    pub async fn send(
        taken: &mut Taken,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, SendError> {
        taken
            .sender
            .try_send_request(request)
            .await
            .map_err(|mut e| {
                let unsent = e.take_message().is_some();
                SendError::Http {
                    error: e.into_error(),
                    unsent,
                }
            })
    }

    /// Puts a connection whose response was read to the end back on the idle stack.
    pub fn give_back(&self, taken: Taken) {
        if taken.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender: taken.sender,
                since: Instant::now(),
            });
        }
    }
}

/// A streamed response body that gives its connection back once read to the end (dropped
/// earlier, the connection closes with it: hyper cannot reuse a half-read response).
pub struct Returning {
    body: Incoming,
    taken: Option<(Taken, Arc<Upstream>)>,
}

impl Returning {
    /// Wraps `body`, read from `taken`.
    pub fn new(body: Incoming, taken: Taken, upstream: Arc<Upstream>) -> Self {
        Self {
            body,
            taken: Some((taken, upstream)),
        }
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = polled
            && let Some((taken, upstream)) = this.taken.take()
        {
            upstream.give_back(taken);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
