//! The one record billing stores, as the database returns it and as the API prints it.

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use serde::{Serialize, Serializer};

use crate::schema::transactions;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize)]
#[diesel(table_name = transactions, check_for_backend(diesel::pg::Pg))]
pub struct Transaction {
    pub id: i64,
    /// A string, as in the original app: client ids such as "007" or "acme-1" keep their exact spelling.
    pub client_id: String,
    pub amount: i64,
    #[serde(serialize_with = "rfc3339_utc")]
    pub created_at: DateTime<Utc>,
}

/// `treat_none_as_default_value = false`: neither field is optional, and with the default (true) diesel wraps each
/// value in a "maybe DEFAULT" node that marks the INSERT unsafe to cache, so every `/add` would prepare its statement
/// anew (an extra round trip to PostgreSQL and a Close). The SQL is the same either way.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = transactions, treat_none_as_default_value = false)]
pub struct NewTransaction {
    pub client_id: String,
    pub amount: i64,
}

/// `2026-11-27T07:48:30.123456Z`: always UTC with a `Z`, microseconds as PostgreSQL stores them.
fn rfc3339_utc<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn json_shape_matches_the_original_app() -> Result<(), serde_json::Error> {
        let created_at = Utc
            .with_ymd_and_hms(2026, 11, 27, 7, 48, 30)
            .single()
            .ok_or_else(|| serde::ser::Error::custom("bad date"))?;
        let t = Transaction { id: 1, client_id: "1".into(), amount: 1000, created_at };
        assert_eq!(
            serde_json::to_string(&t)?,
            r#"{"id":1,"client_id":"1","amount":1000,"created_at":"2026-11-27T07:48:30.000000Z"}"#
        );
        Ok(())
    }
}
