//! Which database failure means which answer: the SQLSTATE of PostgreSQL's answer (never its message, whose
//! language is the server's `lc_messages`) decides the status, the message and the `kind` it is counted as.

use tokio_postgres::error::SqlState;

use crate::db::connect::describe;
use crate::db::statements::WriteError;
use crate::error::ApiError;
use crate::metrics::{self, DbErrorKind};

impl ApiError {
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
        let described = describe(err);
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
