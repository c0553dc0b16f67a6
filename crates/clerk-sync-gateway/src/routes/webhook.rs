//! `POST /webhooks/clerk`: check the headers, read, verify, publish, and only then answer 2xx.
//!
//! Whatever the headers alone can refuse (an announced body over the limit, missing or malformed
//! svix headers, a stale timestamp, a signature that could never match) is refused before a byte
//! of the body is read; the body is then read within the process-wide byte budget.
//!
//! A correctly signed body that is not a Clerk event envelope (not JSON, no `type`, `data` not an
//! object) cannot be routed as an event, but it is authentic and must not vanish: it is published
//! to the dead-letter exchange with `x-error-kind` and `x-error`, confirmed like any event, and
//! answered `202` with `"status": "dead_lettered"` so Svix does not retry it for a day. Operators
//! see it with `clerk-sync dlq list`.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use clerk_sync_core::amqp::{self, OutgoingMessage, Publisher, headers};
use clerk_sync_core::envelope;
use clerk_sync_core::signing::{self, Verified, Verifier};
use lapin::BasicProperties;
use lapin::types::FieldTable;

use super::body::{declared_length, read_limited};
use crate::budget::BodyBudget;
use crate::error::GatewayError;
use crate::metrics::{GatewayMetrics, InFlight};

pub struct AppState {
    pub verifier: Verifier,
    pub publisher: Publisher,
    pub metrics: GatewayMetrics,
    pub max_body_size: usize,
    pub budget: BodyBudget,
    pub request_timeout: Duration,
    pub retry_after_secs: u64,
}

const APP_ID: &str = "clerk-sync-gateway";

/// Copies the signature headers into an `http` 1.x map, the type the `svix` crate takes.
fn signature_headers(req: &HttpRequest) -> http::HeaderMap {
    let mut out = http::HeaderMap::with_capacity(3);
    let names = signing::ID_HEADERS.iter().chain(&signing::TIMESTAMP_HEADERS).chain(&signing::SIGNATURE_HEADERS);
    for name in names {
        if let Some(value) = req.headers().get(*name)
            && let Ok(value) = http::HeaderValue::from_bytes(value.as_bytes())
        {
            out.insert(*name, value);
        }
    }
    out
}

fn properties(verified: &Verified, received_at_ms: i64, kind: &str, mut table: FieldTable) -> BasicProperties {
    amqp::put_i64(&mut table, headers::SVIX_TIMESTAMP, verified.timestamp);
    amqp::put_i64(&mut table, headers::RECEIVED_AT, received_at_ms);
    BasicProperties::default()
        .with_message_id(verified.id.as_str().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_timestamp(u64::try_from(received_at_ms / 1000).unwrap_or_default())
        .with_type(kind.into())
        .with_app_id(APP_ID.into())
        .with_headers(table)
}

#[tracing::instrument(name = "webhook", skip_all, fields(svix_id = tracing::field::Empty, event_type = tracing::field::Empty))]
pub async fn receive(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let _in_flight = InFlight::enter(&state.metrics.in_flight);
    let (outcome, response) = match handle(&req, payload, &state).await {
        Ok((outcome, response)) => (outcome, response),
        Err(e) => {
            let outcome = match &e {
                GatewayError::BrokerUnavailable { cause, .. } => {
                    tracing::warn!(error = %cause, "not confirmed by the broker; answering 503");
                    "unavailable"
                }
                GatewayError::Overloaded { .. } => {
                    tracing::info!("the body budget is full; answering 503");
                    "overloaded"
                }
                GatewayError::Verify(v) => {
                    state.metrics.verification_failures.with_label_values(&[v.reason()]).inc();
                    tracing::info!(reason = v.reason(), "rejected webhook");
                    "rejected"
                }
                other => {
                    tracing::info!(reason = other.code(), "rejected webhook");
                    "rejected"
                }
            };
            (outcome, e.error_response())
        }
    };
    state.metrics.requests.with_label_values(&[outcome, response.status().as_str()]).inc();
    response
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(&'static str, HttpResponse), GatewayError> {
    let received_at = amqp::now_ms();
    let declared = declared_length(req);
    if declared.is_some_and(|len| len > state.max_body_size) {
        return Err(GatewayError::PayloadTooLarge { limit: state.max_body_size });
    }
    let headers = signature_headers(req);
    signing::check_headers(&headers)?;
    let hold = state.budget.hold();
    let body =
        read_limited(payload, declared, state.max_body_size, state.request_timeout, &hold, state.retry_after_secs)
            .await?;
    if body.is_empty() {
        return Err(GatewayError::EmptyBody);
    }
    let verified = state.verifier.verify(&body, &headers)?;
    let span = tracing::Span::current();
    span.record("svix_id", verified.id.as_str());
    state.metrics.body_bytes.observe(body.len() as f64);

    let topology = state.publisher.topology();
    let (exchange, routing_key, table, outcome, kind) = match envelope::parse_head(&body) {
        Ok(head) => {
            span.record("event_type", &*head.event_type);
            (topology.exchange(), head.event_type.into_owned(), FieldTable::default(), "queued", None)
        }
        Err(e) => {
            tracing::warn!(error_kind = e.kind(), "signed body is not a Clerk event envelope; dead-lettering it");
            let mut table = FieldTable::default();
            amqp::put_str(&mut table, headers::ERROR, &e.to_string());
            amqp::put_str(&mut table, headers::ERROR_KIND, e.kind());
            amqp::put_i64(&mut table, headers::ATTEMPTS, 0);
            amqp::put_i64(&mut table, headers::FIRST_FAILED_AT, received_at);
            amqp::put_str(&mut table, headers::ORIGINAL_ROUTING_KEY, "");
            (topology.dead_exchange(), String::new(), table, "dead_lettered", Some(e.kind()))
        }
    };
    let properties =
        properties(&verified, received_at, if routing_key.is_empty() { "invalid" } else { &routing_key }, table);
    let started = Instant::now();
    let published = state
        .publisher
        .publish(OutgoingMessage { exchange: &exchange, routing_key: &routing_key, body: &body, properties })
        .await;
    let result = published.as_ref().map_or_else(|e| e.kind(), |()| "ok");
    state.metrics.publish_confirm.with_label_values(&[result]).observe(started.elapsed().as_secs_f64());
    published.map_err(|cause| GatewayError::BrokerUnavailable { cause, retry_after_secs: state.retry_after_secs })?;

    tracing::debug!(outcome, "confirmed by the broker");
    let mut body = serde_json::json!({ "status": outcome, "svix_id": verified.id });
    if let Some(kind) = kind {
        body["reason"] = kind.into();
    }
    Ok((outcome, HttpResponse::build(StatusCode::ACCEPTED).json(body)))
}

pub async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .json(serde_json::json!({"error": "not_found", "message": "the webhook endpoint is POST /webhooks/clerk"}))
}

pub async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header(("Allow", "POST"))
        .json(serde_json::json!({"error": "method_not_allowed", "message": "use POST"}))
}
