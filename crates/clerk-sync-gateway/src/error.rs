//! Every way a webhook request can fail, mapped to an HTTP status and a small JSON body with a
//! stable error code. Messages say what the client did wrong; nothing internal leaks.

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use clerk_sync_core::amqp::PublishError;
use clerk_sync_core::signing::VerifyError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("the request body could not be read")]
    BodyRead,
    #[error("the request body is empty")]
    EmptyBody,
    #[error("{0}")]
    Verify(#[from] VerifyError),
    #[error("the event could not be queued; retry later")]
    BrokerUnavailable { cause: PublishError, retry_after_secs: u64 },
    #[error("too many request bodies are being received at once; retry later")]
    Overloaded { retry_after_secs: u64 },
}

impl GatewayError {
    /// The stable code in the error body and in metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::BodyRead => "invalid_body",
            Self::EmptyBody => "empty_body",
            Self::Verify(e) => e.reason(),
            Self::BrokerUnavailable { .. } => "broker_unavailable",
            Self::Overloaded { .. } => "overloaded",
        }
    }
}

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BodyRead | Self::EmptyBody => StatusCode::BAD_REQUEST,
            Self::Verify(e) if e.is_unauthorized() => StatusCode::UNAUTHORIZED,
            Self::Verify(_) => StatusCode::BAD_REQUEST,
            Self::BrokerUnavailable { .. } | Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Self::BrokerUnavailable { retry_after_secs, .. } | Self::Overloaded { retry_after_secs } = self {
            response.insert_header((RETRY_AFTER, HeaderValue::from(*retry_after_secs)));
        }
        response.json(serde_json::json!({ "error": self.code(), "message": self.to_string() }))
    }
}
