//! # The HTTP listener (SPEC §5)
//!
//! One listener for operators and for customer-success tools:
//!
//! | route | answers |
//! |---|---|
//! | `GET /metrics` | Prometheus text: the recorder's metrics and the read side's gauges ([`render_metrics`]) |
//! | `GET /healthz` | `200 ok` while the process serves |
//! | `GET /readyz` | `200` when [`ReadSide::ready`], else `503` with the reason |
//! | `GET /v1/accounts/{id}` | one account: the `vitals.health` record's fields, 90 daily scores, open tickets, MRR, NPS |
//! | `GET /v1/accounts?band=&segment=&status=&limit=&cursor=` | accounts, worst score first, ties by account id |
//! | `GET /v1/portfolio` | portfolio analytics by segment (503 until a partition published them) |
//! | `GET /v1/interventions` | the effect of each kind of CS touchpoint |
//!
//! Every answer about state carries `as_of` (per partition: the watermark,
//! the `vitals.sequenced` offset and the input offsets the views reflect
//! at least) and `restoring`. Errors are JSON: `{"error": "...", "status": N}`.
//!
//! When a bearer token is configured it is required on `/v1/*` only;
//! `/metrics`, `/healthz` and `/readyz` stay open for scrapers and probes.
//!
//! Listing pagination is by keyset: `next_cursor` is an opaque token naming
//! the last account of the page (its score and id), and the next page
//! starts after it. Pages therefore never repeat or skip an account that
//! did not change, however the rest of the portfolio moves; an account
//! whose score changed between pages is listed where its new score puts it.
//!
//! Query parameters are strict: an unknown one (`bands=`) is a 400, not
//! ignored. `segment=` (empty) selects accounts without a segment.
//! `status` is `active` (the default: cancelled accounts are churned, not
//! at risk, and `vitals_accounts` leaves them out too), `cancelled` or
//! `all`.
//!
//! An instance knows only the partitions it owns. An unknown account is a
//! 404 — or a 503 with `Retry-After` while some partition is restoring or
//! the assignment is not known, since the account may appear then.
//!
//! Bounds: request headers ≤ 16 KiB in total and ≤ 64 of them, 10 s to
//! send them, ≤ 1024 open connections, request bodies ignored (every route
//! is a GET; any body-reading route would be limited to 1 KiB).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::codec::{output, timefmt};
use crate::core::event::Priority;
use crate::core::time::{day_of, day_start};
use crate::core::Band;
use crate::readside::{
    render_metrics, AccountView, ListCursor, ListFilter, PartitionStatus, ReadSide, Readiness,
};

/// Default page size of the listing.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page size of the listing.
pub const MAX_LIMIT: usize = 1000;
/// Header bytes a request may send (hyper's read buffer: request line and
/// headers must fit).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 64;
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_CONNECTIONS: usize = 1024;
/// How long open connections get to finish after shutdown is asked.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub read: Arc<ReadSide>,
    pub metrics: PrometheusHandle,
    /// Bearer token required on `/v1/*` when set.
    pub token: Option<Arc<str>>,
}

impl HttpState {
    pub fn new(read: Arc<ReadSide>, metrics: PrometheusHandle, token: Option<String>) -> Self {
        HttpState {
            read,
            metrics,
            token: token.map(Into::into),
        }
    }
}

/// An API error, rendered as `{"error": "...", "status": N}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no account {0:?} in this instance's partitions")]
    NotFound(String),
    #[error("account {0:?} is not known yet: partitions are restoring or not assigned")]
    NotYetKnown(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("no such route")]
    NoRoute,
    #[error("method not allowed (every route is GET)")]
    MethodNotAllowed,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::NotYetKnown(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = json!({"error": self.to_string(), "status": status.as_u16()});
        if let ApiError::NotYetKnown(_) = self {
            body["restoring"] = Value::Bool(true);
        }
        let mut resp = (status, Json(body)).into_response();
        let h = resp.headers_mut();
        match self {
            ApiError::Unauthorized => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"vitals\""),
                );
            }
            ApiError::NotYetKnown(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::MethodNotAllowed => {
                h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            _ => {}
        }
        resp
    }
}

/// The routes, without the listener (for tests with `tower::ServiceExt`).
pub fn router(state: HttpState) -> Router {
    let api = Router::new()
        .route("/v1/accounts", get(list_accounts))
        .route("/v1/accounts/{id}", get(get_account))
        .route("/v1/interventions", get(interventions))
        .route("/v1/portfolio", get(portfolio))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(api)
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(1024))
        .with_state(state)
}

/// `GET /v1/interventions`: intervention impact by touchpoint kind, over
/// the partitions this instance owns.
async fn interventions(State(st): State<HttpState>) -> Response {
    Json(with_as_of(&st, json!(st.read.interventions_report()))).into_response()
}

/// `report` with `as_of` (the partitions it covers, each with how far it
/// is folded) and `restoring` (SPEC §5: every answer about state says how
/// current it is).
fn with_as_of(st: &HttpState, mut report: Value) -> Value {
    let statuses = st.read.statuses();
    let partitions: Vec<Value> = statuses.iter().map(|(&p, s)| as_of(p, Some(s))).collect();
    let restoring = statuses.values().any(|s| s.restoring) || !st.read.ready();
    if let Value::Object(m) = &mut report {
        m.insert("as_of".into(), json!({"partitions": partitions}));
        m.insert("restoring".into(), restoring.into());
    }
    report
}

/// `GET /v1/portfolio`: NPS, churn, retention, CLV by segment, over the
/// partitions this instance owns.
async fn portfolio(State(st): State<HttpState>) -> Response {
    match st.read.portfolio_report() {
        Some(r) => Json(with_as_of(&st, json!(r))).into_response(),
        None => {
            ApiError::NotYetKnown("no partition has published analytics yet".into()).into_response()
        }
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown` completes, then lets open
/// connections finish for up to [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = router(state);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "http listening");
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep
                    // serving the connections we have.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, limit = MAX_CONNECTIONS, "http connection refused: too many open");
            continue;
        };
        let svc = TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = conns.len(),
            "http connections still open at shutdown, closing them"
        );
        conns.shutdown().await;
    }
    tracing::info!(%addr, "http stopped");
    Ok(())
}

/// Compares without an early exit on the first differing byte.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(
    State(st): State<HttpState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(token) = &st.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        if !given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(req).await)
}

async fn metrics_text(State(st): State<HttpState>) -> Response {
    let body = render_metrics(&st.metrics, &st.read);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(st): State<HttpState>) -> Response {
    let partitions: Vec<u32> = st.read.statuses().into_keys().collect();
    match st.read.readiness() {
        Readiness::Ready => Json(json!({"ready": true, "partitions": partitions})).into_response(),
        Readiness::NoAssignment => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "error": "no partition assignment yet",
                "status": 503,
                "ready": false,
                "reason": "no_assignment",
                "partitions": partitions,
            })),
        )
            .into_response(),
        Readiness::Restoring(r) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "error": format!("partitions restoring: {r:?}"),
                "status": 503,
                "ready": false,
                "reason": "restoring",
                "restoring": r,
                "partitions": partitions,
            })),
        )
            .into_response(),
    }
}

fn ts_or_null(t: Option<i64>) -> Value {
    t.map_or(Value::Null, |t| Value::String(timefmt::format(t)))
}

/// `as_of` of one partition; an unknown partition reflects nothing.
fn as_of(partition: u32, st: Option<&PartitionStatus>) -> Value {
    let default = PartitionStatus::default();
    let st = st.unwrap_or(&default);
    let inputs: Map<String, Value> = st
        .input_offsets
        .iter()
        .map(|(t, o)| (t.clone(), Value::from(*o)))
        .collect();
    json!({
        "partition": partition,
        "watermark": ts_or_null(st.watermark),
        "sequenced_offset": st.sequenced_offset,
        "input_offsets": inputs,
    })
}

fn date(day: i32) -> String {
    let s = timefmt::format(day_start(day));
    s.get(..10).map_or(s.clone(), str::to_string)
}

/// One account as the API shows it: the `vitals.health` record (rendered
/// by the same code as the topic, `caused_by` left out), then the API's
/// extra fields.
fn account_json(v: &AccountView, st: Option<&PartitionStatus>) -> Value {
    let mut obj = match serde_json::from_slice::<Value>(&output::health_json(&v.health)) {
        Ok(Value::Object(m)) => m,
        other => {
            tracing::error!(account = %v.health.account_id, ?other, "health record did not render as an object");
            Map::new()
        }
    };
    obj.remove("caused_by");
    let days: Vec<Value> = v
        .history
        .points()
        .into_iter()
        .map(|(d, s)| json!({"date": date(d), "score": s}))
        .collect();
    obj.insert("score_days".into(), Value::Array(days));
    // Config changes inside the history: a jump there may be the scorecard's,
    // not the customer's.
    let first_day = v.history.points().first().map(|p| p.0);
    let changes: Vec<Value> = st
        .map(|s| s.scorecard_changes.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|c| first_day.is_some_and(|d| day_of(c.at) >= d))
        .map(|c| json!({"time": timefmt::format(c.at), "from": &*c.from, "to": &*c.to}))
        .collect();
    obj.insert("scorecard_changes".into(), Value::Array(changes));
    let mut tickets = Map::new();
    for (i, p) in Priority::ALL.iter().enumerate() {
        tickets.insert(p.as_str().into(), v.open_tickets[i].into());
    }
    tickets.insert(
        "total".into(),
        v.open_tickets.iter().map(|&n| n as u64).sum::<u64>().into(),
    );
    obj.insert("open_tickets".into(), Value::Object(tickets));
    obj.insert("mrr_cents".into(), v.mrr_cents.into());
    obj.insert(
        "nps".into(),
        v.latest_nps.map_or(
            Value::Null,
            |n| json!({"score": n.score, "date": date(n.day)}),
        ),
    );
    obj.insert("partition".into(), v.partition.into());
    obj.insert("as_of".into(), as_of(v.partition, st));
    obj.insert("restoring".into(), st.is_none_or(|s| s.restoring).into());
    Value::Object(obj)
}

async fn get_account(
    State(st): State<HttpState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    match st.read.get(&id) {
        Some(v) => {
            let status = st.read.status(v.partition);
            Ok(Json(account_json(&v, status.as_ref())))
        }
        None if !st.read.ready() => Err(ApiError::NotYetKnown(id)),
        None => Err(ApiError::NotFound(id)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    band: Option<String>,
    segment: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn encode_cursor(v: &AccountView) -> String {
    let (score, id) = v.sort_key();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{score}\n{id}"))
}

fn decode_cursor(s: &str) -> Result<ListCursor, ApiError> {
    let bad = || ApiError::BadRequest("cursor: not a cursor this API returned".into());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (score, id) = text.split_once('\n').ok_or_else(bad)?;
    let score: f64 = score.parse().map_err(|_| bad())?;
    if !score.is_finite() {
        return Err(bad());
    }
    Ok(ListCursor {
        score,
        account_id: id.to_string(),
    })
}

fn list_item(v: &AccountView) -> Value {
    let h = &v.health;
    json!({
        "account_id": h.account_id,
        "score": h.score,
        "band": h.band.as_str(),
        "segment": h.segment,
        "trend_30d": h.trend_30d,
        "status": if h.cancelled { "cancelled" } else { "active" },
        "time": timefmt::format(h.time),
        "override": h.override_.as_ref().map(|o| json!({
            "band": o.band.map(|b| b.as_str()),
            "score": o.score,
            "reason": o.reason,
        })),
        "top_driver": h.drivers.first().map(|d| json!({
            "factor": d.factor,
            "impact": d.impact,
            "detail": d.detail,
        })),
        "mrr_cents": v.mrr_cents,
        "open_tickets": v.open_tickets.iter().map(|&n| n as u64).sum::<u64>(),
        "partition": v.partition,
    })
}

async fn list_accounts(
    State(st): State<HttpState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let band = match q.band.as_deref() {
        None => None,
        Some(b) => Some(Band::parse(b).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "band: {b:?} is not one of healthy, neutral, at_risk"
            ))
        })?),
    };
    let cancelled = match q.status.as_deref() {
        None | Some("active") => Some(false),
        Some("all") => None,
        Some("cancelled") => Some(true),
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "status: {s:?} is not one of active, cancelled, all"
            )))
        }
    };
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "limit: {l:?} is not an integer in 1..={MAX_LIMIT}"
                )))
            }
        },
    };
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let filter = ListFilter {
        band,
        segment: q.segment.map(|s| (!s.is_empty()).then_some(s)),
        cancelled,
    };
    let mut page = st.read.list(&filter, after.as_ref(), limit + 1);
    let next_cursor = if page.len() > limit {
        page.truncate(limit);
        page.last().map(encode_cursor)
    } else {
        None
    };
    Ok(Json(with_as_of(
        &st,
        json!({
            "accounts": page.iter().map(list_item).collect::<Vec<_>>(),
            "next_cursor": next_cursor,
        }),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("41.7\nacme\ncorp");
        let d = decode_cursor(&c).expect("cursor");
        assert_eq!(d.score, 41.7);
        assert_eq!(d.account_id, "acme\ncorp");
        for bad in ["", "!!!", "bm9uZQ", "TmFOCmE"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
