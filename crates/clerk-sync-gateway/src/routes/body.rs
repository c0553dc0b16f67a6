//! Reading the raw request body under a size limit, a deadline and the process-wide byte budget.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::web::{self, Bytes};
use futures_util::StreamExt;

use crate::budget::Hold;
use crate::error::GatewayError;

/// First buffer of a chunked body; it doubles from there, up to the limit.
const FIRST_CHUNKED_BUFFER: usize = 8 * 1024;
/// How long a body may wait for the bytes of a larger one it shed.
const SHED_WAIT: Duration = Duration::from_millis(500);

/// The announced length, if any.
pub fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok())
}

/// The body exactly as sent: the signature covers these bytes, so they are never re-serialised.
///
/// Every byte of buffer is reserved from `hold` before it is allocated: the announced length up
/// front (a real sender announces it, and it is allocated once), or each doubling of a chunked
/// body's buffer. Past the budget, or once shed for a smaller request, the answer is 503.
pub async fn read_limited(
    mut payload: web::Payload,
    declared: Option<usize>,
    limit: usize,
    deadline: Duration,
    hold: &Hold,
    retry_after_secs: u64,
) -> Result<Bytes, GatewayError> {
    let overloaded = |_| GatewayError::Overloaded { retry_after_secs };
    let read = async {
        let mut buf = Vec::new();
        if let Some(len) = declared.filter(|len| *len > 0) {
            hold.reserve(len, SHED_WAIT).await.map_err(overloaded)?;
            buf.reserve_exact(len);
        }
        loop {
            let chunk = tokio::select! {
                biased;
                () = hold.shed() => return Err(GatewayError::Overloaded { retry_after_secs }),
                chunk = payload.next() => chunk,
            };
            let Some(chunk) = chunk else { break };
            let chunk = chunk.map_err(|_| GatewayError::BodyRead)?;
            let needed = buf.len() + chunk.len();
            if needed > limit {
                return Err(GatewayError::PayloadTooLarge { limit });
            }
            if needed > buf.capacity() {
                let grown = needed.max(buf.capacity() * 2).max(FIRST_CHUNKED_BUFFER).min(limit);
                hold.reserve(grown - buf.capacity(), SHED_WAIT).await.map_err(overloaded)?;
                buf.reserve_exact(grown - buf.len());
            }
            buf.extend_from_slice(&chunk);
        }
        hold.keep();
        Ok(Bytes::from(buf))
    };
    tokio::time::timeout(deadline, read).await.map_err(|_| GatewayError::RequestTimeout)?
}
