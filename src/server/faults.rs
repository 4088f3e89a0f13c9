//! Test hooks: fault injection, request counters and the per-request tracing span, all in
//! one middleware in front of the API and CDN routes (not `/_emulator`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use super::error::{error_response, HttpError};
use super::AppState;

/// Faults to inject. All optional; rates are probabilities in 0..=1 per matching request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultConfig {
    /// Delay before handling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Answer 503 (or `error_status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_status: Option<u16>,
    /// Answer 429 with `Retry-After: retry_after_secs` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// Send the headers and part of the body, then drop the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_rate: Option<f64>,
    /// Only requests of this route template, e.g. `GET /cdn/{key}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Only the next `count` matching requests; then the faults clear themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl FaultConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("errorRate", self.error_rate),
            ("rateLimitRate", self.rate_limit_rate),
            ("dropRate", self.drop_rate),
        ] {
            if let Some(r) = rate {
                if !(0.0..=1.0).contains(&r) {
                    return Err(format!("{name} must be between 0 and 1, got {r}"));
                }
            }
        }
        if let Some(s) = self.error_status {
            if !(400..=599).contains(&s) {
                return Err(format!("errorStatus must be a 4xx or 5xx status, got {s}"));
            }
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.latency_ms.is_none()
            && self.error_rate.is_none()
            && self.rate_limit_rate.is_none()
            && self.drop_rate.is_none()
    }

    fn matches(&self, route: &str) -> bool {
        match &self.route {
            None => true,
            // Also accept the template without its method.
            Some(r) => r == route || route.split_once(' ').is_some_and(|(_, p)| p == r),
        }
    }
}

/// Request counters, as `GET /_emulator/stats` shows them.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub total: u64,
    pub by_route: BTreeMap<String, u64>,
    pub by_status: BTreeMap<String, u64>,
}

/// The decision for one request.
#[derive(Debug, Default)]
struct Decision {
    latency: Option<Duration>,
    respond: Option<Response>,
    drop: bool,
}

pub struct Faults {
    config: Mutex<FaultConfig>,
    // Seeded, so a run of tests with partial rates behaves the same every time.
    rng: Mutex<StdRng>,
    stats: Mutex<Stats>,
}

impl Faults {
    pub fn new(config: FaultConfig) -> Self {
        Faults {
            config: Mutex::new(config),
            rng: Mutex::new(StdRng::seed_from_u64(0x006d_6564_6961_6673)),
            stats: Mutex::new(Stats::default()),
        }
    }

    pub fn set(&self, config: FaultConfig) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    pub fn get(&self) -> FaultConfig {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn reset_stats(&self) {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = Stats::default();
    }

    fn count(&self, route: &str, status: StatusCode) {
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        s.total += 1;
        *s.by_route.entry(route.to_string()).or_default() += 1;
        *s.by_status.entry(status.as_u16().to_string()).or_default() += 1;
    }

    fn decide(&self, route: &str) -> Decision {
        let cfg = {
            let mut guard = self.config.lock().unwrap_or_else(|p| p.into_inner());
            if guard.is_empty() || !guard.matches(route) {
                return Decision::default();
            }
            let cfg = guard.clone();
            if let Some(n) = guard.count {
                if n <= 1 {
                    *guard = FaultConfig::default();
                } else {
                    guard.count = Some(n - 1);
                }
            }
            cfg
        };
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let mut hit = |rate: Option<f64>| rate.is_some_and(|r| r > 0.0 && rng.gen::<f64>() < r);
        let mut d = Decision {
            latency: cfg.latency_ms.map(Duration::from_millis),
            ..Decision::default()
        };
        if hit(cfg.error_rate) {
            let status = cfg
                .error_status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            d.respond = Some(error_response(status, "injected fault"));
        } else if hit(cfg.rate_limit_rate) {
            let secs = cfg.retry_after_secs.unwrap_or(1);
            let mut r = error_response(StatusCode::TOO_MANY_REQUESTS, "injected rate limit");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            d.respond = Some(r);
        } else if hit(cfg.drop_rate) {
            d.drop = true;
        }
        d
    }
}

/// The route template of a request for stats, faults and logs: `GET /api/v1/…/files/{id}`,
/// `GET /cdn/{key}`. Never the concrete path (it may hold ids) nor the query string (CDN
/// signatures).
fn route_label(req: &Request) -> String {
    let method = req.method().as_str();
    match req.extensions().get::<MatchedPath>().map(|m| m.as_str()) {
        Some(p) if p.starts_with("/cdn/") => format!("{method} /cdn/{{key}}"),
        Some(p) => format!("{method} {p}"),
        None => format!("{method} <unmatched>"),
    }
}

/// The middleware: tracing span, latency/error/429 faults before the handler, the drop
/// fault on the response body, and the counters.
pub async fn layer(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = route_label(&req);
    let span = tracing::info_span!("request", route = %route);
    async move {
        let started = Instant::now();
        let decision = st.faults.decide(&route);
        if let Some(latency) = decision.latency {
            tokio::time::sleep(latency).await;
        }
        let mut response = match decision.respond {
            Some(r) => {
                // Read the request body first, as a gateway does before it answers: a
                // client still sending an upload would otherwise see a broken pipe instead
                // of the injected status.
                let mut body = req.into_body().into_data_stream();
                while let Some(Ok(_)) = body.next().await {}
                r
            }
            None => next.run(req).await,
        };
        if decision.drop {
            response = truncate_body(response);
        }
        let status = response.status();
        st.faults.count(&route, status);
        tracing::debug!(
            status = status.as_u16(),
            latency_ms = started.elapsed().as_millis() as u64,
            injected = decision.drop,
            "handled"
        );
        response
    }
    .instrument(span)
    .await
}

/// Keeps the headers (with the full Content-Length) and passes about half of the body,
/// then fails the stream, which makes hyper drop the connection.
fn truncate_body(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let exact = axum::body::HttpBody::size_hint(&body).exact();
    let len = declared.or(exact).unwrap_or(0);
    if declared.is_none() {
        if let Some(n) = exact {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    let budget = len / 2;
    let dropped = || {
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "injected connection drop",
        ))
    };
    enum Cut<S> {
        Pass(S, u64),
        Fail,
        End,
    }
    let cut = futures::stream::unfold(
        Cut::Pass(body.into_data_stream(), budget),
        move |state| async move {
            match state {
                Cut::Pass(mut stream, budget) => match stream.next().await {
                    Some(Ok(chunk)) if (chunk.len() as u64) < budget => {
                        let rest = budget - chunk.len() as u64;
                        Some((Ok(chunk), Cut::Pass(stream, rest)))
                    }
                    Some(Ok(mut chunk)) if budget > 0 => {
                        chunk.truncate(budget as usize);
                        Some((Ok(chunk), Cut::Fail))
                    }
                    _ => Some((dropped(), Cut::End)),
                },
                Cut::Fail => {
                    // Let hyper flush the headers and the partial body first: an error in
                    // the same poll aborts the connection before anything is written, and
                    // the client sees no response at all instead of a cut-off body.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    Some((dropped(), Cut::End))
                }
                Cut::End => None,
            }
        },
    );
    Response::from_parts(parts, Body::from_stream(cut))
}

/// `GET /_emulator/stats`.
pub async fn get_stats(State(st): State<Arc<AppState>>) -> Json<Stats> {
    Json(st.faults.stats())
}

/// `DELETE /_emulator/stats`.
pub async fn reset_stats(State(st): State<Arc<AppState>>) -> Json<Stats> {
    st.faults.reset_stats();
    Json(st.faults.stats())
}

/// `GET /_emulator/faults`.
pub async fn get_faults(State(st): State<Arc<AppState>>) -> Json<FaultConfig> {
    Json(st.faults.get())
}

/// `PUT /_emulator/faults`.
pub async fn put_faults(
    State(st): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Json<FaultConfig>, HttpError> {
    let cfg: FaultConfig = serde_json::from_slice(&body)
        .map_err(|e| HttpError::bad_request(format!("invalid fault config: {e}")))?;
    cfg.validate().map_err(HttpError::bad_request)?;
    st.faults.set(cfg);
    Ok(Json(st.faults.get()))
}

/// `DELETE /_emulator/faults`.
pub async fn clear_faults(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    st.faults.set(FaultConfig::default());
    Json(st.faults.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_limits_and_route_filter() {
        let f = Faults::new(FaultConfig {
            error_rate: Some(1.0),
            route: Some("GET /cdn/{key}".into()),
            count: Some(2),
            ..Default::default()
        });
        assert!(f
            .decide("GET /api/v1/media-manager/files")
            .respond
            .is_none());
        assert!(f.decide("GET /cdn/{key}").respond.is_some());
        assert!(f.decide("GET /cdn/{key}").respond.is_some());
        assert!(f.decide("GET /cdn/{key}").respond.is_none());
        assert_eq!(f.get(), FaultConfig::default());
    }

    #[test]
    fn rate_limit_sets_retry_after() {
        let f = Faults::new(FaultConfig {
            rate_limit_rate: Some(1.0),
            retry_after_secs: Some(3),
            ..Default::default()
        });
        let r = f.decide("GET /x").respond.unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
    }

    #[test]
    fn validation() {
        assert!(FaultConfig {
            error_rate: Some(1.5),
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(FaultConfig {
            error_status: Some(200),
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(FaultConfig::default().validate().is_ok());
    }
}
