//! The one record billing stores, as the database returns it and as the API prints it.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transaction {
    pub id: i64,
    /// A string, as in the original app: client ids such as "007" or "acme-1" keep their exact spelling. `None`
    /// (JSON `null`) only for a row adopted from the course's Flask table, whose columns allowed NULL
    /// (schema/adopt.rs).
    pub client_id: Option<String>,
    /// `None` only for an adopted Flask row, as above.
    pub amount: Option<i64>,
    #[serde(serialize_with = "rfc3339_utc")]
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewTransaction {
    pub client_id: String,
    pub amount: i64,
    /// The request's `Idempotency-Key`, already validated (http/validation.rs); stored with the row.
    pub idempotency_key: Option<String>,
}

impl NewTransaction {
    /// True when `stored` is this payment: the same client and amount (the key is the caller's to compare).
    pub fn same_payment_as(&self, stored: &Transaction) -> bool {
        stored.client_id.as_deref() == Some(self.client_id.as_str()) && stored.amount == Some(self.amount)
    }
}

/// What `POST /add` recorded: a new row, or the row an earlier request with the same `Idempotency-Key` recorded
/// (a replay, answered as that request was, with nothing written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub transaction: Transaction,
    pub replayed: bool,
}

/// `2026-11-27T07:48:30.123456Z`: always UTC with a `Z`, microseconds as PostgreSQL stores them.
fn rfc3339_utc<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(Rfc3339Micros::new(at).as_str())
}

/// The text of `at.to_rfc3339_opts(SecondsFormat::Micros, true)`, built without `fmt` or a heap allocation for the
/// years 0000-9999 (everything PostgreSQL's `now()` can give), and by chrono itself otherwise. `/getall` formats one
/// per row. Kept because it earns its place: with it and [`Transaction::write_json`] a `/getall` of 100,000 rows
/// costs measurably less CPU than with chrono's formatter and `serde_json::to_writer` (docs/benchmarks.md,
/// "`/getall` encodes rows without serde's per-key escaping").
pub enum Rfc3339Micros {
    Digits([u8; 27]),
    Other(String),
}

impl Rfc3339Micros {
    pub fn new(at: &DateTime<Utc>) -> Self {
        let t = at.naive_utc();
        let (year, nanos) = (t.year(), t.nanosecond());
        // Outside four-digit years chrono adds a sign; a leap second shows as nanoseconds past 10^9 (":60").
        let (Ok(year @ 0..=9999), 0..=999_999_999) = (u32::try_from(year), nanos) else {
            return Rfc3339Micros::Other(at.to_rfc3339_opts(SecondsFormat::Micros, true));
        };
        let mut b = *b"0000-00-00T00:00:00.000000Z";
        for (range, value) in [
            (0..4, year),
            (5..7, t.month()),
            (8..10, t.day()),
            (11..13, t.hour()),
            (14..16, t.minute()),
            (17..19, t.second()),
            (20..26, nanos / 1000),
        ] {
            let mut v = value;
            for digit in b[range].iter_mut().rev() {
                *digit = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        Rfc3339Micros::Digits(b)
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Only ASCII digits and punctuation were written above.
            Rfc3339Micros::Digits(b) => std::str::from_utf8(b).unwrap_or_default(),
            Rfc3339Micros::Other(s) => s,
        }
    }
}

impl Transaction {
    /// A row of `id, client_id, amount, created_at`, the columns every ledger statement selects in this order.
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Transaction {
            id: row.try_get(0)?,
            client_id: row.try_get(1)?,
            amount: row.try_get(2)?,
            created_at: row.try_get(3)?,
        })
    }

    /// Appends exactly what `serde_json::to_writer(out, self)` would (same keys, order and escaping), without
    /// serde's per-field key escaping: `/getall` writes one per row (what it saves: see [`Rfc3339Micros`]).
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(b"{\"id\":");
        serde_json::to_writer(&mut *out, &self.id)?;
        out.extend_from_slice(b",\"client_id\":");
        serde_json::to_writer(&mut *out, &self.client_id)?;
        out.extend_from_slice(b",\"amount\":");
        serde_json::to_writer(&mut *out, &self.amount)?;
        out.extend_from_slice(b",\"created_at\":\"");
        out.extend_from_slice(Rfc3339Micros::new(&self.created_at).as_str().as_bytes());
        out.extend_from_slice(b"\"}");
        Ok(())
    }
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
        let t = Transaction { id: 1, client_id: Some("1".into()), amount: Some(1000), created_at };
        assert_eq!(
            serde_json::to_string(&t)?,
            r#"{"id":1,"client_id":"1","amount":1000,"created_at":"2026-11-27T07:48:30.000000Z"}"#
        );
        Ok(())
    }

    #[test]
    fn fast_timestamp_text_is_chronos() -> Result<(), String> {
        let mut at = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).single().ok_or("bad date")?;
        let end = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single().ok_or("bad date")?;
        // Steps of a prime number of seconds and microseconds visit every field's digits over the whole range.
        let step = chrono::Duration::seconds(86_400 * 97 + 3_607) + chrono::Duration::microseconds(123_457);
        let mut checked = 0;
        while at <= end {
            assert_eq!(Rfc3339Micros::new(&at).as_str(), at.to_rfc3339_opts(SecondsFormat::Micros, true));
            at += step;
            checked += 1;
        }
        assert!(checked > 30_000, "{checked}");
        for at in [
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).single().ok_or("bad date")?,
            Utc.with_ymd_and_hms(-1, 12, 31, 23, 59, 59).single().ok_or("bad date")?,
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).single().ok_or("bad date")?,
            end + chrono::Duration::nanoseconds(999_999_999),
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        ] {
            assert_eq!(Rfc3339Micros::new(&at).as_str(), at.to_rfc3339_opts(SecondsFormat::Micros, true));
        }
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 1_500_000))
            .ok_or("bad leap second")?
            .and_utc();
        assert_eq!(Rfc3339Micros::new(&leap).as_str(), leap.to_rfc3339_opts(SecondsFormat::Micros, true));
        Ok(())
    }

    #[test]
    fn write_json_is_serdes() -> Result<(), Box<dyn std::error::Error>> {
        let created_at = Utc.with_ymd_and_hms(2026, 11, 27, 7, 48, 30).single().ok_or("bad date")?
            + chrono::Duration::microseconds(654_321);
        for (id, client_id, amount) in [
            (1, Some("1"), Some(1000)),
            (i64::MAX, Some("acme \"quoted\" \\ back/slash"), Some(i64::MAX)),
            (42, Some("юникод ✓ \u{7f}\u{a0}"), Some(1)),
            (7, Some("tab\there\nnewline\u{1}"), Some(99)),
            (8, None, None),
        ] {
            let t = Transaction { id, client_id: client_id.map(Into::into), amount, created_at };
            let mut fast = Vec::new();
            t.write_json(&mut fast)?;
            assert_eq!(String::from_utf8(fast)?, serde_json::to_string(&t)?);
        }
        Ok(())
    }
}
