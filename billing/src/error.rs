//! Every failure the API reports: a status and a JSON body that says what went wrong and, for bad input, which
//! field. Database failures are classified here so that handlers never decide status codes on their own.

use serde::Serialize;
use tokio_postgres::error::SqlState;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::db;
use crate::ledger::WriteError;
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

    /// Classifies a failed read and counts it. `action` says what was being done, e.g. "reading transaction 5".
    pub fn from_query(action: &str, err: &tokio_postgres::Error) -> Self {
        let (error, kind) = Self::classify(action, err, Outcome::Read);
        if let Some(kind) = kind {
            metrics::database_error(kind);
        }
        error
    }

    /// As [`ApiError::from_query`], for a write: the answer says whether the payment may have been recorded.
    pub fn from_write(action: &str, err: &WriteError) -> Self {
        let (error, kind) = match &err.error {
            Some(e) => Self::classify(action, e, Outcome::Write { maybe_committed: err.maybe_committed }),
            None => {
                log::error!("{action}: PostgreSQL committed the row but returned none");
                (Self::internal(format!("the database returned no row while {action}")), Some(DbErrorKind::Other))
            }
        };
        if let Some(kind) = kind {
            metrics::database_error(kind);
        }
        error
    }

    /// The answer for a failed statement, and the kind of database error it counts as (`None` for a refusal of the
    /// values, which is the client's error). Decided by SQLSTATE, never by PostgreSQL's message, whose language is
    /// the server's `lc_messages`.
    fn classify(action: &str, err: &tokio_postgres::Error, outcome: Outcome) -> (Self, Option<DbErrorKind>) {
        let described = db::describe(err);
        let Some(db_error) = err.as_db_error() else {
            // No answer from PostgreSQL: the socket failed (the server stopped, the network dropped the connection).
            log::warn!("{action}: database connection lost: {described}");
            return match outcome {
                Outcome::Write { maybe_committed: true } => Self::outcome_unknown(action),
                _ => (
                    Self::unavailable(format!("the database connection was lost while {action}{}", outcome.nothing())),
                    Some(DbErrorKind::Unavailable),
                ),
            };
        };
        if let Outcome::Write { maybe_committed: true } = outcome {
            log::warn!("{action}: {described}");
            return Self::outcome_unknown(action);
        }
        let code = db_error.code();
        match code.code() {
            "42P01" => {
                log::error!("{action}: {described}");
                (Self::schema_missing(&described), Some(DbErrorKind::SchemaMissing))
            }
            // A statement cancelled by PostgreSQL's own statement_timeout.
            "57014" => {
                log::warn!("{action}: {described}");
                let error = Self::unavailable(format!(
                    "the database did not finish in time while {action}{}",
                    outcome.nothing()
                ));
                (error, Some(DbErrorKind::Timeout))
            }
            "23514" | "23502" | "22001" => {
                (Self::bad_request(format!("the database refused the values: {described}")), None)
            }
            _ if is_temporary(code) => {
                log::warn!("{action}: {described}");
                let error = Self::unavailable(format!(
                    "the database is unavailable while {action}: {described}{}",
                    outcome.nothing()
                ));
                (error, Some(DbErrorKind::Unavailable))
            }
            _ => {
                log::error!("{action}: {described}");
                let error = Self::internal(format!("database error while {action}: {described}{}", outcome.nothing()));
                (error, Some(DbErrorKind::Other))
            }
        }
    }

    fn outcome_unknown(action: &str) -> (Self, Option<DbErrorKind>) {
        let error = Self::unavailable(format!(
            "the database connection failed while {action}; the payment may or may not have been recorded: check \
             before retrying"
        ));
        (error, Some(DbErrorKind::OutcomeUnknown))
    }
}

/// What a failed statement may have left behind.
#[derive(Clone, Copy)]
enum Outcome {
    Read,
    Write { maybe_committed: bool },
}

impl Outcome {
    /// For a write PostgreSQL answered with an error: it rolled the statement back, so the client may retry.
    fn nothing(self) -> &'static str {
        match self {
            Outcome::Read => "",
            Outcome::Write { .. } => "; nothing was recorded: it is safe to retry",
        }
    }
}

/// SQLSTATEs of an outage that passes: the server is shutting down, restarting or in recovery (class 57 but 57014),
/// a connection problem (08), too many connections, a full disk or no memory (53), a lock or serialization
/// conflict, a read-only server (a standby, or a primary just demoted in a failover). 503, not 500.
fn is_temporary(code: &SqlState) -> bool {
    let code = code.code();
    matches!(&code[..2], "57" | "08" | "53") || matches!(code, "40001" | "40P01" | "55P03" | "25006")
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
