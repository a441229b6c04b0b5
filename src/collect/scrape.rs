//! One scrape: `GET http://<pod ip>:<admin port>/drover/report` with the ModelDeployment's
//! bearer token, a per-request timeout and a bound on the body; with feedback on, the query
//! asks for the feedback log after the last record checked (`feedbackSince`,
//! `feedbackInstance`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::dedup::FeedbackCursor;
use crate::monitor::report::Report;

/// Largest report body accepted (a report with many features is tens of KB; a whole
/// feedback log, read at a pod's first scrape, about 4 MB).
pub const MAX_REPORT_BYTES: usize = 8 << 20;

/// Path of the monitor's report.
pub const REPORT_PATH: &str = "/drover/report";

/// Why a pod did not answer with a report. Bounded: used as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScrapeFailure {
    /// No answer within the timeout.
    Timeout,
    /// The connection failed (refused, reset, unreachable).
    Connect,
    /// 401/403: the token is not the one the monitor has.
    Unauthorized,
    /// Another HTTP status.
    Status,
    /// The body was too large or not a report.
    Malformed,
}

impl ScrapeFailure {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ScrapeFailure::Timeout => "timeout",
            ScrapeFailure::Connect => "connect",
            ScrapeFailure::Unauthorized => "unauthorized",
            ScrapeFailure::Status => "status",
            ScrapeFailure::Malformed => "malformed",
        }
    }
}

/// An HTTP client for scrapes (plain HTTP inside the cluster; the token authenticates).
#[derive(Clone)]
pub struct Scraper {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl Scraper {
    /// A scraper giving each request `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            // No idle connections: a scrape every few seconds per pod does not need one kept
            // open, and a thousand idle connections cost ~20 MiB (benches/collector.rs).
            .pool_max_idle_per_host(0)
            .build(connector);
        Self { client, timeout }
    }

    /// The report of the monitor at `ip:port`.
    pub async fn fetch(&self, ip: IpAddr, port: u16, token: &str) -> Result<Report, ScrapeFailure> {
        self.fetch_report(ip, port, token, None).await
    }

    /// The report of the monitor at `ip:port`, with its feedback log after `feedback` when
    /// given.
    pub async fn fetch_report(
        &self,
        ip: IpAddr,
        port: u16,
        token: &str,
        feedback: Option<&FeedbackCursor>,
    ) -> Result<Report, ScrapeFailure> {
        tokio::time::timeout(self.timeout, self.fetch_inner(ip, port, token, feedback))
            .await
            .unwrap_or(Err(ScrapeFailure::Timeout))
    }

    async fn fetch_inner(
        &self,
        ip: IpAddr,
        port: u16,
        token: &str,
        feedback: Option<&FeedbackCursor>,
    ) -> Result<Report, ScrapeFailure> {
        // SocketAddr's Display brackets IPv6 addresses, as a URI authority needs.
        let uri = format!(
            "http://{}{REPORT_PATH}{}",
            SocketAddr::new(ip, port),
            feedback.map(report_query).unwrap_or_default()
        );
        let request = Request::get(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|_| ScrapeFailure::Connect)?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|_| ScrapeFailure::Connect)?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(ScrapeFailure::Unauthorized);
            }
            _ => return Err(ScrapeFailure::Status),
        }
        let body = Limited::new(response.into_body(), MAX_REPORT_BYTES)
            .collect()
            .await
            .map_err(|_| ScrapeFailure::Malformed)?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|_| ScrapeFailure::Malformed)
    }
}

/// `?feedbackSince=…[&feedbackInstance=…]` (the instance is whatever a pod reported: encoded).
fn report_query(cursor: &FeedbackCursor) -> String {
    let mut query = url::form_urlencoded::Serializer::for_suffix(String::from("?"), 1);
    query.append_pair("feedbackSince", &cursor.since.to_string());
    if let Some(instance) = &cursor.instance {
        query.append_pair("feedbackInstance", instance);
    }
    query.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feedback_query_names_the_cursor() {
        assert_eq!(report_query(&FeedbackCursor::default()), "?feedbackSince=0");
        assert_eq!(
            report_query(&FeedbackCursor {
                since: 42,
                instance: Some("ab&c d".into()),
            }),
            "?feedbackSince=42&feedbackInstance=ab%26c+d"
        );
    }
}
