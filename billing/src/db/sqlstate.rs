//! Which database failure means which answer: the SQLSTATE of PostgreSQL's answer (never its message, whose
//! language is the server's `lc_messages`) decides the status, the message and the `kind` it is counted as.

use tokio_postgres::error::SqlState;

use crate::db::connect::describe;
use crate::error::{ApiError, UNKNOWN_OUTCOME_ADVICE};
use crate::metrics::{self, DbErrorKind};

/// SQLSTATE classes (a code's first two characters), which tokio-postgres does not name.
pub mod class {
    /// 01: a WARNING sent along with a successful answer.
    pub const WARNING: &str = "01";
    /// 08: the connection failed.
    pub const CONNECTION_EXCEPTION: &str = "08";
    /// 23: a constraint refused a row.
    pub const INTEGRITY_CONSTRAINT_VIOLATION: &str = "23";
    /// 53: too many connections, a full disk, no memory.
    pub const INSUFFICIENT_RESOURCES: &str = "53";
    /// 57: the server is shutting down or restarting, or cancelled the statement.
    pub const OPERATOR_INTERVENTION: &str = "57";
}

/// The class of `code` (see [`class`]).
pub fn class_of(code: &SqlState) -> &str {
    code.code().get(..2).unwrap_or_default()
}

/// Classifies a failed read and counts it. `action` says what was being done, e.g. "reading transaction 5".
pub fn query_error(action: &str, err: &tokio_postgres::Error) -> ApiError {
    counted(classify(action, err, Outcome::Read))
}

/// As [`query_error`], for a write: the answer says whether the payment may have been recorded, which
/// `maybe_committed` tells (db/statements.rs, `WriteError`).
pub fn write_error(action: &str, err: &tokio_postgres::Error, maybe_committed: bool) -> ApiError {
    counted(classify(action, err, Outcome::Write { maybe_committed }))
}

fn counted((error, kind): (ApiError, Option<DbErrorKind>)) -> ApiError {
    if let Some(kind) = kind {
        metrics::database_error(kind);
    }
    error
}

/// The answer for a failed statement, and the kind of database error it counts as (`None` for a refusal of the
/// values, which is the client's error). Decided by SQLSTATE, never by PostgreSQL's message, whose language is
/// the server's `lc_messages`.
fn classify(action: &str, err: &tokio_postgres::Error, outcome: Outcome) -> (ApiError, Option<DbErrorKind>) {
    let described = describe(err);
    let Some(db_error) = err.as_db_error() else {
        // No answer from PostgreSQL: the socket failed (the server stopped, the network dropped the connection).
        log::warn!("{action}: database connection lost: {described}");
        return match outcome {
            Outcome::Write { maybe_committed: true } => outcome_unknown(action),
            _ => (
                ApiError::unavailable(format!("the database connection was lost while {action}{}", outcome.nothing())),
                Some(DbErrorKind::Unavailable),
            ),
        };
    };
    if let Outcome::Write { maybe_committed: true } = outcome {
        log::warn!("{action}: {described}");
        return outcome_unknown(action);
    }
    let code = db_error.code();
    if *code == SqlState::UNDEFINED_TABLE {
        log::error!("{action}: {described}");
        (ApiError::schema_missing(&described), Some(DbErrorKind::SchemaMissing))
    } else if *code == SqlState::QUERY_CANCELED {
        // A statement cancelled by PostgreSQL's own statement_timeout.
        log::warn!("{action}: {described}");
        let error =
            ApiError::unavailable(format!("the database did not finish in time while {action}{}", outcome.nothing()));
        (error, Some(DbErrorKind::Timeout))
    } else if REFUSED_VALUES.contains(code) {
        (ApiError::bad_request(format!("the database refused the values: {described}")), None)
    } else if is_temporary(code) {
        log::warn!("{action}: {described}");
        let error = ApiError::unavailable(format!(
            "the database is unavailable while {action}: {described}{}",
            outcome.nothing()
        ));
        (error, Some(DbErrorKind::Unavailable))
    } else {
        log::error!("{action}: {described}");
        let error = ApiError::internal(format!("database error while {action}: {described}{}", outcome.nothing()));
        (error, Some(DbErrorKind::Other))
    }
}

fn outcome_unknown(action: &str) -> (ApiError, Option<DbErrorKind>) {
    let error = ApiError::unavailable(format!(
        "the database connection failed while {action}; the payment may or may not have been recorded: \
         {UNKNOWN_OUTCOME_ADVICE}"
    ));
    (error, Some(DbErrorKind::OutcomeUnknown))
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
    matches!(class_of(code), class::OPERATOR_INTERVENTION | class::CONNECTION_EXCEPTION | class::INSUFFICIENT_RESOURCES)
        || TEMPORARY.contains(code)
}

/// The codes of [`is_temporary`] outside its classes.
const TEMPORARY: [SqlState; 4] = [
    SqlState::T_R_SERIALIZATION_FAILURE,
    SqlState::T_R_DEADLOCK_DETECTED,
    SqlState::LOCK_NOT_AVAILABLE,
    SqlState::READ_ONLY_SQL_TRANSACTION,
];

/// A value the table refuses: a CHECK rule, a NULL where none is allowed, a string longer than its column. The
/// client's error (400), not the database's.
const REFUSED_VALUES: [SqlState; 3] =
    [SqlState::CHECK_VIOLATION, SqlState::NOT_NULL_VIOLATION, SqlState::STRING_DATA_RIGHT_TRUNCATION];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_temporary_outages_are_told_by_name() {
        assert_eq!(class_of(&SqlState::CHECK_VIOLATION), class::INTEGRITY_CONSTRAINT_VIOLATION);
        assert_eq!(class_of(&SqlState::WARNING), class::WARNING);
        for passing in [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::CONNECTION_FAILURE,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::DISK_FULL,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::READ_ONLY_SQL_TRANSACTION,
        ] {
            assert!(is_temporary(&passing), "{}", passing.code());
        }
        for lasting in [SqlState::UNDEFINED_TABLE, SqlState::SYNTAX_ERROR, SqlState::CHECK_VIOLATION] {
            assert!(!is_temporary(&lasting), "{}", lasting.code());
        }
    }
}
