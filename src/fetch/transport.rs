//! One HTTP client for everything model fetching does: plain `http(s)://` downloads, the MLflow
//! REST API, and object_store's S3/GCS/Azure clients (through [`Connector`]). It is the
//! crate's own hyper + rustls (ring) stack, so object stores add no second TLS stack.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::client::legacy::connect::HttpConnector;
use object_store::client::{
    ClientOptions, HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
    HttpResponse, HttpResponseBody, HttpService,
};

/// How long a request may wait for the response headers (the body streams without a limit:
/// models are large).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP(S) client.
pub type Client = LegacyClient<hyper_rustls::HttpsConnector<HttpConnector>, HttpRequestBody>;

/// A client trusting the system's roots.
pub fn client() -> Result<Client, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| format!("no TLS roots: {e}"))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(LegacyClient::builder(hyper_util::rt::TokioExecutor::new()).build(https))
}

/// Sends `request`, waiting at most [`RESPONSE_TIMEOUT`] for the headers.
pub async fn send(
    client: &Client,
    request: http::Request<HttpRequestBody>,
) -> Result<http::Response<hyper::body::Incoming>, HttpError> {
    match tokio::time::timeout(RESPONSE_TIMEOUT, client.request(request)).await {
        Err(_) => Err(HttpError::new(
            HttpErrorKind::Timeout,
            std::io::Error::other(format!(
                "no response within {}s",
                RESPONSE_TIMEOUT.as_secs()
            )),
        )),
        Ok(Err(e)) => {
            let kind = if e.is_connect() {
                HttpErrorKind::Connect
            } else {
                HttpErrorKind::Request
            };
            Err(HttpError::new(kind, e))
        }
        Ok(Ok(response)) => Ok(response),
    }
}

/// The whole body of a (small) response.
pub async fn body_bytes(response: http::Response<hyper::body::Incoming>) -> Result<Bytes, String> {
    response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| format!("reading the response: {e}"))
}

/// object_store's transport, over [`Client`].
#[derive(Debug, Clone)]
pub struct Connector {
    client: Client,
}

impl Connector {
    /// A connector over `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl object_store::client::HttpConnector for Connector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(Service {
            client: self.client.clone(),
        }))
    }
}

#[derive(Debug)]
struct Service {
    client: Client,
}

#[async_trait::async_trait]
impl HttpService for Service {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let response = send(&self.client, request).await?;
        let (parts, body) = response.into_parts();
        let body = body.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e));
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}
