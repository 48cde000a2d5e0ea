//! Every failure the API reports: a status and a JSON body that says what went wrong and, for bad input, which
//! field. Every layer answers in these terms; which database failure means which answer is decided in one place,
//! db/sqlstate.rs, so that handlers never decide status codes on their own.

use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable, machine-readable name for the kind of failure.
    pub code: &'static str,
    pub field: Option<&'static str>,
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    message: &'a str,
    /// The id also sent as `X-Request-Id`, so a user's error report leads to the log lines of that request.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, field: None, message: message.into() }
    }

    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ApiError { field: Some(field), ..Self::new(StatusCode::BAD_REQUEST, "invalid_field", message) }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    pub fn request_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request body did not arrive within {}s", limit.as_secs()),
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", message)
    }

    /// The database gave no answer within `waited` (`DATABASE_TIMEOUT_SECS`) while doing `action`.
    pub fn no_answer(action: &str, waited: std::time::Duration) -> Self {
        Self::unavailable(format!("the database did not answer within {}s while {action}", waited.as_secs()))
    }

    /// The service is fine but this kind of request is at its limit; the client should retry shortly.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
    }

    pub fn schema_missing(database_message: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "schema_missing",
            format!(
                "the ledger table is missing from the database ({database_message}); was the database wiped? \
                 billing does not re-create it behind your back: restore the data, or restart billing to run its \
                 migrations on an empty database"
            ),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let request_id = crate::request_id::current();
        let body = Body {
            error: self.code,
            field: self.field,
            message: &self.message,
            request_id: request_id.as_ref().map(|id| id.as_str()),
        };
        let mut response = warp::reply::with_status(warp::reply::json(&body), self.status).into_response();
        // The rest of the body was never read, so the connection cannot carry another request: say so, and hyper
        // closes it after this answer instead of waiting for the rest.
        if self.code == "busy" {
            response.headers_mut().insert(warp::http::header::RETRY_AFTER, warp::http::HeaderValue::from_static("1"));
        }
        if matches!(self.status, StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE) {
            response
                .headers_mut()
                .insert(warp::http::header::CONNECTION, warp::http::HeaderValue::from_static("close"));
        }
        response
    }
}
