//! Every failure the API reports: a status and a JSON body that says what went wrong and, for bad input, which
//! field. Every layer answers in these terms; which database failure means which answer is decided in one place,
//! db/sqlstate.rs, so that handlers never decide status codes on their own.

use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

/// The request header that makes `POST /add` idempotent (the IETF httpapi draft's name).
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// What a client told "the payment may or may not have been recorded" should do: every such message ends with it.
pub const UNKNOWN_OUTCOME_ADVICE: &str = "retry with the same Idempotency-Key header for the definitive answer (the \
     payment if it was recorded, a new write if it was not); without a key, check GET /getall before retrying";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable, machine-readable name for the kind of failure.
    pub code: ErrorCode,
    pub field: Option<&'static str>,
    pub message: String,
}

/// The kinds of failure, each with the stable name clients read in the body's `error` field (docs and tests rely on
/// these names; the `reason` label of `billing_payments_refused_total` is one of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidField,
    BadRequest,
    UnsupportedMediaType,
    PayloadTooLarge,
    RequestTimeout,
    NotFound,
    MethodNotAllowed,
    DatabaseUnavailable,
    Busy,
    SchemaMissing,
    Internal,
    IdempotencyKeyInvalid,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::DatabaseUnavailable => "database_unavailable",
            ErrorCode::Busy => "busy",
            ErrorCode::SchemaMissing => "schema_missing",
            ErrorCode::Internal => "internal",
            ErrorCode::IdempotencyKeyInvalid => "idempotency_key_invalid",
            ErrorCode::IdempotencyKeyMissing => "idempotency_key_missing",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
        }
    }
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
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status, code, field: None, message: message.into() }
    }

    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ApiError { field: Some(field), ..Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidField, message) }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::UnsupportedMediaType, message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than {limit} bytes"),
        )
    }

    pub fn request_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            format!("the request body did not arrive within {}s", limit.as_secs()),
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::DatabaseUnavailable, message)
    }

    /// The database gave no answer within `waited` (`DATABASE_TIMEOUT_SECS`) while doing `action`.
    pub fn no_answer(action: &str, waited: std::time::Duration) -> Self {
        Self::unavailable(format!("the database did not answer within {}s while {action}", waited.as_secs()))
    }

    /// The service is fine but this kind of request is at its limit; the client should retry shortly.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Busy, message)
    }

    pub fn schema_missing(database_message: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::SchemaMissing,
            format!(
                "the ledger table is missing from the database ({database_message}); was the database wiped? \
                 billing does not re-create it behind your back: restore the data, or restart billing to run its \
                 migrations on an empty database"
            ),
        )
    }

    /// The `Idempotency-Key` header is not a key (validation.rs says what one is).
    pub fn idempotency_key_invalid(message: impl Into<String>) -> Self {
        ApiError {
            field: Some(IDEMPOTENCY_KEY),
            ..Self::new(StatusCode::BAD_REQUEST, ErrorCode::IdempotencyKeyInvalid, message)
        }
    }

    /// `IDEMPOTENCY_KEY_REQUIRED=true` and the request has no key.
    pub fn idempotency_key_missing() -> Self {
        ApiError {
            field: Some(IDEMPOTENCY_KEY),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::IdempotencyKeyMissing,
                "this server requires an Idempotency-Key header on POST /add (IDEMPOTENCY_KEY_REQUIRED=true): send \
                 a new key, such as a UUID, with each new payment, and the same key when retrying it",
            )
        }
    }

    /// The key names a recorded payment with another `client_id` or `amount`. The payment is not named: the key
    /// may have been someone else's.
    pub fn idempotency_key_reused() -> Self {
        ApiError {
            field: Some(IDEMPOTENCY_KEY),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was already used for a payment with another client_id or amount; nothing \
                 was written: a new payment needs a new key",
            )
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let request_id = crate::request_id::current();
        let body = Body {
            error: self.code.as_str(),
            field: self.field,
            message: &self.message,
            request_id: request_id.as_ref().map(|id| id.as_str()),
        };
        let mut response = warp::reply::with_status(warp::reply::json(&body), self.status).into_response();
        // The rest of the body was never read, so the connection cannot carry another request: say so, and hyper
        // closes it after this answer instead of waiting for the rest.
        if self.code == ErrorCode::Busy {
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
