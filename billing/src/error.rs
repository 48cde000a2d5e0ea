//! Every failure the API reports: a status and a JSON body that says what went wrong and, for bad input, which
//! field. Database failures are classified here so that handlers never decide status codes on their own.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::metrics::{self, DbErrorKind};

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

    /// Classifies a failed query and counts it. `action` says what was being done, e.g. "reading transaction 5".
    pub fn from_query(action: &str, err: &DieselError) -> Self {
        Self::from_database(action, err, false)
    }

    /// As [`ApiError::from_query`], for a write: a lost connection leaves its outcome unknown.
    pub fn from_write(action: &str, err: &DieselError) -> Self {
        Self::from_database(action, err, true)
    }

    fn from_database(action: &str, err: &DieselError, write: bool) -> Self {
        let (error, kind) = Self::classify(action, err, write);
        if let Some(kind) = kind {
            metrics::database_error(kind);
        }
        error
    }

    /// The answer for a failed query, and the kind of database error it counts as (`None` for a refusal of the
    /// values, which is the client's error, and for a missing row).
    fn classify(action: &str, err: &DieselError, write: bool) -> (Self, Option<DbErrorKind>) {
        match err {
            DieselError::NotFound => (Self::not_found(format!("not found while {action}")), None),
            DieselError::DatabaseError(kind, info) => {
                let message = info.message();
                if is_missing_table(message) {
                    log::error!("{action}: {message}");
                    return (Self::schema_missing(message), Some(DbErrorKind::SchemaMissing));
                }
                match kind {
                    // No SQLSTATE: the socket failed (the server stopped, the network dropped the connection).
                    DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand => {
                        log::warn!("{action}: database connection lost: {message}");
                        let error = Self::unavailable(format!(
                            "the database connection was lost while {action}; a write may or may not have been \
                             recorded: check before retrying"
                        ));
                        (error, Some(if write { DbErrorKind::OutcomeUnknown } else { DbErrorKind::Unavailable }))
                    }
                    _ if is_server_going_away(message) => {
                        log::warn!("{action}: {message}");
                        let error = Self::unavailable(format!("the database is unavailable while {action}: {message}"));
                        (error, Some(DbErrorKind::Unavailable))
                    }
                    DatabaseErrorKind::CheckViolation | DatabaseErrorKind::NotNullViolation => {
                        (Self::bad_request(format!("the database refused the values: {message}")), None)
                    }
                    _ => {
                        log::error!("{action}: {message}");
                        let error = Self::internal(format!("database error while {action}: {message}"));
                        (error, Some(DbErrorKind::Other))
                    }
                }
            }
            other => {
                // Protocol-level failures (a reset socket, a server that went away mid-query) surface here.
                log::warn!("{action}: {other}");
                let error = Self::unavailable(format!("the database failed while {action}: {other}"));
                (error, Some(if write { DbErrorKind::OutcomeUnknown } else { DbErrorKind::Unavailable }))
            }
        }
    }
}

/// PostgreSQL's messages for SQLSTATE class 57 (operator intervention: shutdown, crash, recovery), which diesel
/// reports without their code. The outage is temporary: 503, not 500.
fn is_server_going_away(message: &str) -> bool {
    const PREFIXES: [&str; 3] = [
        "terminating connection due to",
        "the database system is",
        "canceling statement due to conflict with recovery",
    ];
    PREFIXES.iter().any(|p| message.starts_with(p))
}

fn is_missing_table(message: &str) -> bool {
    message.starts_with("relation \"transactions\" does not exist")
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
        if matches!(self.status, StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE) {
            response
                .headers_mut()
                .insert(warp::http::header::CONNECTION, warp::http::HeaderValue::from_static("close"));
        }
        response
    }
}
