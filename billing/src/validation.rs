//! Turns what a client sent into values the ledger accepts, or into an error that names the field and the problem.
//! Nothing reaches the database before it has passed through here.

use serde_json::Value;

use crate::error::ApiError;
use crate::models::NewTransaction;

pub const CLIENT_ID_MAX_CHARS: usize = 100;
pub const GETALL_MAX_LIMIT: i64 = 100_000;

/// Where `/add` found a field: the query string (the original app's only way) or the request body.
#[derive(Debug, Default)]
struct Fields {
    client_id: Option<String>,
    amount: Option<AmountInput>,
}

#[derive(Debug)]
enum AmountInput {
    Text(String),
    Json(Value),
}

/// The body of `POST /add`, with its declared media type.
pub struct Body<'a> {
    pub content_type: Option<&'a str>,
    pub bytes: &'a [u8],
}

pub fn parse_add(query: &str, body: Body<'_>) -> Result<NewTransaction, ApiError> {
    let from_query = parse_form(query.as_bytes(), "query string")?;
    let from_body = parse_body(body)?;
    let client_id = one_source("client_id", from_query.client_id, from_body.client_id)?;
    let amount = one_source("amount", from_query.amount, from_body.amount)?;

    let client_id =
        validate_client_id(client_id.ok_or_else(|| ApiError::invalid("client_id", "client_id is required"))?)?;
    let amount = validate_amount(amount.ok_or_else(|| ApiError::invalid("amount", "amount is required"))?)?;
    Ok(NewTransaction { client_id, amount })
}

fn one_source<T>(field: &'static str, query: Option<T>, body: Option<T>) -> Result<Option<T>, ApiError> {
    match (query, body) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            field,
            format!("{field} was given both in the query string and in the body; send it once"),
        )),
        (q, b) => Ok(q.or(b)),
    }
}

fn parse_form(bytes: &[u8], origin: &str) -> Result<Fields, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes)
        .map_err(|e| ApiError::bad_request(format!("the {origin} is not valid form encoding: {e}")))?;
    let mut fields = Fields::default();
    for (key, value) in pairs {
        match key.as_str() {
            "client_id" => set_once(&mut fields.client_id, "client_id", value)?,
            "amount" => set_once(&mut fields.amount, "amount", AmountInput::Text(value))?,
            // Unknown parameters are ignored, as the original app did (curl users add cache-busters and such).
            _ => {}
        }
    }
    Ok(fields)
}

fn set_once<T>(slot: &mut Option<T>, field: &'static str, value: T) -> Result<(), ApiError> {
    if slot.is_some() {
        return Err(ApiError::invalid(field, format!("{field} was given more than once")));
    }
    *slot = Some(value);
    Ok(())
}

fn parse_body(body: Body<'_>) -> Result<Fields, ApiError> {
    if body.bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Fields::default());
    }
    let media_type = body
        .content_type
        .and_then(|ct| ct.split(';').next())
        .map(|mt| mt.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match media_type.as_str() {
        "application/json" => parse_json(body.bytes),
        "application/x-www-form-urlencoded" => parse_form(body.bytes, "form body"),
        "" => Err(ApiError::unsupported_media_type(
            "the request has a body but no Content-Type; use application/json or application/x-www-form-urlencoded",
        )),
        other => Err(ApiError::unsupported_media_type(format!(
            "Content-Type {other} is not supported; use application/json or application/x-www-form-urlencoded"
        ))),
    }
}

fn parse_json(bytes: &[u8]) -> Result<Fields, ApiError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(ApiError::bad_request(
            r#"the JSON body must be an object such as {"client_id": "1", "amount": 1000}"#,
        ));
    };
    let client_id = match map.remove("client_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        // Integers are accepted and kept as their decimal spelling: `{"client_id": 1}` means client "1".
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Some(_) => return Err(ApiError::invalid("client_id", "client_id must be a string")),
    };
    let amount = match map.remove("amount") {
        None | Some(Value::Null) => None,
        Some(v) => Some(AmountInput::Json(v)),
    };
    Ok(Fields { client_id, amount })
}

pub fn validate_client_id(client_id: String) -> Result<String, ApiError> {
    let chars = client_id.chars().count();
    if chars == 0 {
        return Err(ApiError::invalid("client_id", "client_id must not be empty"));
    }
    if chars > CLIENT_ID_MAX_CHARS {
        return Err(ApiError::invalid(
            "client_id",
            format!("client_id must be at most {CLIENT_ID_MAX_CHARS} characters, got {chars}"),
        ));
    }
    // Same set as the table's CHECK constraint: C0 and C1 controls (a newline would forge a log line).
    if let Some(c) = client_id.chars().find(|c| c.is_control()) {
        return Err(ApiError::invalid(
            "client_id",
            format!("client_id must not contain control characters, found U+{:04X}", u32::from(c)),
        ));
    }
    Ok(client_id)
}

fn validate_amount(amount: AmountInput) -> Result<i64, ApiError> {
    let parsed = match &amount {
        AmountInput::Text(s) => s.trim().parse::<i64>().ok(),
        AmountInput::Json(Value::Number(n)) => n.as_i64(),
        AmountInput::Json(_) => None,
    };
    match parsed {
        Some(a) if a > 0 => Ok(a),
        Some(a) => Err(ApiError::invalid("amount", format!("amount must be greater than 0, got {a}"))),
        None => {
            let shown = match amount {
                AmountInput::Text(s) => format!("{s:?}"),
                AmountInput::Json(v) => v.to_string(),
            };
            Err(ApiError::invalid(
                "amount",
                format!("amount must be a whole number from 1 to {}, got {shown}", i64::MAX),
            ))
        }
    }
}

/// `/get/<id>`: the id as typed in the path.
pub fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .map_err(|_| ApiError::invalid("id", format!("the transaction id must be a whole number, got {raw:?}")))
}

/// `?limit=&after_id=` of `GET /getall`: keyset pagination, so a page costs the same at any depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub after_id: i64,
    pub limit: Option<i64>,
}

pub fn parse_page(query: &str) -> Result<Page, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::bad_request(format!("the query string is not valid form encoding: {e}")))?;
    let mut after_id = None;
    let mut limit = None;
    for (key, value) in pairs {
        match key.as_str() {
            "after_id" => {
                let v = value.trim().parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
                    ApiError::invalid(
                        "after_id",
                        format!("after_id must be a whole number of 0 or more, got {value:?}"),
                    )
                })?;
                set_once(&mut after_id, "after_id", v)?;
            }
            "limit" => {
                let v = value.trim().parse::<i64>().ok().filter(|v| (1..=GETALL_MAX_LIMIT).contains(v)).ok_or_else(
                    || {
                        ApiError::invalid(
                            "limit",
                            format!("limit must be a whole number from 1 to {GETALL_MAX_LIMIT}, got {value:?}"),
                        )
                    },
                )?;
                set_once(&mut limit, "limit", v)?;
            }
            _ => {}
        }
    }
    Ok(Page { after_id: after_id.unwrap_or(0), limit })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(query: &str) -> Result<NewTransaction, ApiError> {
        parse_add(query, Body { content_type: None, bytes: b"" })
    }

    fn add_body(content_type: &str, body: &str) -> Result<NewTransaction, ApiError> {
        parse_add("", Body { content_type: Some(content_type), bytes: body.as_bytes() })
    }

    fn rejected(r: Result<NewTransaction, ApiError>) -> (Option<&'static str>, String) {
        match r {
            Ok(t) => panic!("accepted {t:?}"),
            Err(e) => (e.field, e.message),
        }
    }

    #[test]
    fn query_string_like_the_original() -> Result<(), ApiError> {
        let t = add("client_id=1&amount=1000")?;
        assert_eq!((t.client_id.as_str(), t.amount), ("1", 1000));
        let t = add("client_id=%D0%B8%D0%B2%D0%B0%D0%BD&amount=+7")?;
        assert_eq!((t.client_id.as_str(), t.amount), ("иван", 7));
        Ok(())
    }

    #[test]
    fn json_and_form_bodies() -> Result<(), ApiError> {
        let t = add_body("application/json; charset=utf-8", r#"{"client_id":"7","amount":5}"#)?;
        assert_eq!((t.client_id.as_str(), t.amount), ("7", 5));
        let t = add_body("application/json", r#"{"client_id":7,"amount":5}"#)?;
        assert_eq!(t.client_id, "7");
        let t = add_body("application/x-www-form-urlencoded", "client_id=a+b&amount=9")?;
        assert_eq!((t.client_id.as_str(), t.amount), ("a b", 9));
        Ok(())
    }

    #[test]
    fn every_bad_amount_names_the_field() {
        for q in [
            "client_id=1",
            "client_id=1&amount=",
            "client_id=1&amount=0",
            "client_id=1&amount=-5",
            "client_id=1&amount=1.5",
            "client_id=1&amount=abc",
            "client_id=1&amount=9223372036854775808",
        ] {
            let (field, message) = rejected(add(q));
            assert_eq!(field, Some("amount"), "{q}: {message}");
            assert!(message.starts_with("amount "), "{q}: {message}");
        }
        for body in [
            r#"{"client_id":"1","amount":"5"}"#,
            r#"{"client_id":"1","amount":2.5}"#,
            r#"{"client_id":"1","amount":1e3}"#,
        ] {
            assert_eq!(rejected(add_body("application/json", body)).0, Some("amount"), "{body}");
        }
    }

    #[test]
    fn every_bad_client_id_names_the_field() {
        let long = "x".repeat(101);
        for q in [
            "amount=5".to_string(),
            "client_id=&amount=5".to_string(),
            format!("client_id={long}&amount=5"),
            "client_id=a%0Ab&amount=5".to_string(),
            "client_id=a%C2%85b&amount=5".to_string(),
        ] {
            let (field, message) = rejected(add(&q));
            assert_eq!(field, Some("client_id"), "{q}: {message}");
        }
        assert!(add(&format!("client_id={}&amount=5", "я".repeat(100))).is_ok(), "limit counts characters");
        assert_eq!(rejected(add_body("application/json", r#"{"client_id":[1],"amount":5}"#)).0, Some("client_id"));
    }

    #[test]
    fn duplicates_and_conflicts_are_refused() {
        assert!(rejected(add("client_id=1&client_id=2&amount=5")).1.contains("more than once"));
        let r = parse_add(
            "client_id=1&amount=5",
            Body { content_type: Some("application/json"), bytes: br#"{"amount":6}"# },
        );
        assert!(rejected(r).1.contains("both in the query string and in the body"));
    }

    #[test]
    fn bodies_of_unknown_shape_are_refused() {
        assert_eq!(rejected(add_body("text/plain", "client_id=1&amount=5")).0, None);
        assert!(rejected(add_body("application/json", "{")).1.contains("not valid JSON"));
        assert!(rejected(add_body("application/json", "[1]")).1.contains("must be an object"));
    }

    #[test]
    fn ids_and_pages() -> Result<(), ApiError> {
        assert_eq!(parse_id("42")?, 42);
        assert!(parse_id("abc").is_err());
        assert!(parse_id("99999999999999999999").is_err());
        assert_eq!(parse_page("")?, Page { after_id: 0, limit: None });
        assert_eq!(parse_page("limit=10&after_id=5")?, Page { after_id: 5, limit: Some(10) });
        assert_eq!(parse_page("limit=0").err().map(|e| e.field), Some(Some("limit")));
        assert_eq!(parse_page("after_id=-1").err().map(|e| e.field), Some(Some("after_id")));
        Ok(())
    }
}
