//! Turns what a client sent into values the ledger accepts, or into an error that names the field and the problem.
//! Nothing reaches the database before it has passed through here.

use serde_json::Value;

use crate::error::ApiError;
use crate::models::NewTransaction;
use crate::text::{is_line_or_bidi_control, percent_decode_strict};

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
    /// A JSON number, as its literal.
    JsonNumber(String),
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
    Ok(NewTransaction { client_id, amount, idempotency_key: None })
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
    let mut fields = Fields::default();
    for (key, value) in form_pairs(bytes, origin)? {
        match key.as_str() {
            "client_id" => set_once(&mut fields.client_id, "client_id", value)?,
            "amount" => set_once(&mut fields.amount, "amount", AmountInput::Text(value))?,
            // Unknown parameters are ignored, as the original app did (curl users add cache-busters and such).
            _ => {}
        }
    }
    Ok(fields)
}

/// `application/x-www-form-urlencoded` pairs, strictly: `+` is a space and `%XX` a byte as everywhere, but a `%`
/// not followed by two hex digits, or bytes that do not decode to UTF-8, are a 400 naming the field. (The
/// `form_urlencoded` crate behind serde_urlencoded keeps a stray `%` as it is and turns bad UTF-8 into U+FFFD, so
/// `client_id=%E0%A4` would be stored as a replacement character nobody sent.)
fn form_pairs(bytes: &[u8], origin: &str) -> Result<Vec<(String, String)>, ApiError> {
    let decode = |part: &[u8], what: &str| -> Result<String, ApiError> {
        let spaced: Vec<u8> = part.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
        match percent_decode_strict(&spaced) {
            Some(text) => Ok(text),
            None => {
                let shown = String::from_utf8_lossy(part);
                let message = format!(
                    "{what} in the {origin} is not valid percent-encoded UTF-8 ({shown:?}): a % must be followed by \
                     two hex digits, and the bytes must spell UTF-8 text"
                );
                Err(match what {
                    "client_id" => ApiError::invalid("client_id", message),
                    "amount" => ApiError::invalid("amount", message),
                    _ => ApiError::bad_request(message),
                })
            }
        }
    };
    let mut pairs = Vec::new();
    for pair in bytes.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (key, value) = match pair.iter().position(|b| *b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &b""[..]),
        };
        let key = decode(key, "a parameter name")?;
        let value = decode(value, &key)?;
        pairs.push((key, value));
    }
    Ok(pairs)
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

/// The two fields of a JSON body. serde's derived deserializer refuses a field given twice ("duplicate field"),
/// where a `Value` would silently keep the last one.
#[derive(serde::Deserialize)]
struct JsonFields<'a> {
    #[serde(default, borrow)]
    client_id: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    amount: Option<&'a serde_json::value::RawValue>,
}

fn parse_json(bytes: &[u8]) -> Result<Fields, ApiError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            r#"the JSON body must be an object such as {"client_id": "1", "amount": 1000}"#,
        ));
    }
    let map: JsonFields = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the JSON body is ambiguous: {e}; send each field once")))?;
    let client_id = match map.client_id.map(|raw| raw.get()) {
        None | Some("null") => None,
        // Whole numbers are accepted and kept as their decimal spelling: `{"client_id": 1}` (or `1.0`) means client
        // "1".
        Some(number) if number.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
            match json_integer(number).filter(|n| (i128::from(i64::MIN)..=i128::from(u64::MAX)).contains(n)) {
                Some(n) => Some(n.to_string()),
                None => return Err(ApiError::invalid("client_id", "client_id must be a string")),
            }
        }
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::String(s)) => Some(s),
            _ => return Err(ApiError::invalid("client_id", "client_id must be a string")),
        },
    };
    let amount = match map.amount.map(|raw| raw.get()) {
        None | Some("null") => None,
        Some(number) if number.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
            Some(AmountInput::JsonNumber(number.to_owned()))
        }
        Some(other) => Some(AmountInput::Json(
            serde_json::from_str(other)
                .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?,
        )),
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
    // C0 and C1 controls (the table's CHECK constraint has the same set: a newline would forge a log line), the
    // Unicode line and paragraph separators (which editors and log viewers also break lines at), and the bidi
    // controls (which make a line display in another order than it reads, e.g. an amount shown before the client).
    if let Some(c) = client_id.chars().find(|c| c.is_control() || is_line_or_bidi_control(*c)) {
        return Err(ApiError::invalid(
            "client_id",
            format!(
                "client_id must not contain control, line-separator or bidirectional-control characters, found \
                 U+{:04X}",
                u32::from(c)
            ),
        ));
    }
    Ok(client_id)
}

/// A whole number as the API spells it: ASCII digits only, no sign, no spaces, no leading zero unless it is 0.
fn strict_number(text: &str) -> Option<i64> {
    plain_number(text).ok()
}

/// Why a number as the API spells it was refused: its spelling, or only its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotANumber {
    /// Not plain digits: a sign, a space, a leading zero, another character, or nothing at all.
    Spelling,
    /// Plain digits, but past [`i64::MAX`], the largest number the ledger holds.
    TooLarge,
}

/// [`strict_number`], saying why it refused: a client that sent `51418873795017613246464` sent plain digits and
/// must be told the number is too large, not that it is misspelt.
fn plain_number(text: &str) -> Result<i64, NotANumber> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text.len() == 1 || !text.starts_with('0'));
    if !canonical {
        return Err(NotANumber::Spelling);
    }
    // Only digits are left, so the one way parsing can fail is overflow.
    text.parse::<i64>().map_err(|_| NotANumber::TooLarge)
}

fn validate_amount(amount: AmountInput) -> Result<i64, ApiError> {
    let parsed = match &amount {
        AmountInput::Text(s) => strict_number(s),
        AmountInput::JsonNumber(literal) => json_integer(literal).and_then(|n| i64::try_from(n).ok()),
        AmountInput::Json(_) => None,
    };
    match parsed {
        Some(a) if a > 0 => Ok(a),
        Some(a) => Err(ApiError::invalid("amount", format!("amount must be greater than 0, got {a}"))),
        None => {
            let shown = match amount {
                AmountInput::Text(s) => format!("{s:?}"),
                AmountInput::JsonNumber(literal) => literal,
                AmountInput::Json(v) => v.to_string(),
            };
            Err(ApiError::invalid(
                "amount",
                format!(
                    "amount must be a whole number from 1 to {} in plain digits (no sign, spaces or leading zeros), \
                     got {shown}",
                    i64::MAX
                ),
            ))
        }
    }
}

/// The whole number a JSON number literal spells exactly, if it has at most 20 digits: `1000`, and also `1000.0`
/// or `1e3`, which JSON (and JSON Schema's `integer`) give the same value. Computed from the literal's digits, never
/// through a float, so `9007199254740993.0` is 9007199254740993 and `2.5` or `1e-3` are not whole numbers.
fn json_integer(literal: &str) -> Option<i128> {
    let (negative, unsigned) = match literal.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, literal),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], unsigned[at + 1..].parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // The value is `digits` x 10^`scale`.
    let digits = format!("{whole}{fraction}");
    let mut digits = digits.trim_start_matches('0');
    let mut scale = exponent.checked_sub(i64::try_from(fraction.len()).ok()?)?;
    while scale < 0 && digits.ends_with('0') {
        digits = &digits[..digits.len() - 1];
        scale += 1;
    }
    if digits.is_empty() {
        return Some(0);
    }
    if scale < 0 || i64::try_from(digits.len()).ok()?.checked_add(scale)? > 20 {
        return None;
    }
    let scale = usize::try_from(scale).ok()?;
    let text = format!("{}{digits}{}", if negative { "-" } else { "" }, "0".repeat(scale));
    text.parse().ok()
}

/// `/get/<id>`: the id as typed in the path.
pub fn parse_id(raw: &str) -> Result<i64, ApiError> {
    plain_number(raw).map_err(|problem| {
        let message = match problem {
            NotANumber::Spelling => format!(
                "the transaction id must be a whole number in plain digits (no sign or leading zeros), got {raw:?}"
            ),
            NotANumber::TooLarge => {
                format!("the transaction id must be at most {} (no id is larger), got {raw:?}", i64::MAX)
            }
        };
        ApiError::invalid("id", message)
    })
}

/// `?limit=&after_id=` of `GET /getall`: keyset pagination, so a page costs the same at any depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub after_id: i64,
    pub limit: Option<i64>,
}

pub fn parse_page(query: &str) -> Result<Page, ApiError> {
    let pairs = form_pairs(query.as_bytes(), "query string")?;
    let mut after_id = None;
    let mut limit = None;
    for (key, value) in pairs {
        match key.as_str() {
            "after_id" => {
                let v = plain_number(&value).map_err(|problem| {
                    let message = match problem {
                        NotANumber::Spelling => format!(
                            "after_id must be a whole number of 0 or more in plain digits (no sign or leading \
                             zeros), got {value:?}"
                        ),
                        NotANumber::TooLarge => format!("after_id must be at most {}, got {value:?}", i64::MAX),
                    };
                    ApiError::invalid("after_id", message)
                })?;
                set_once(&mut after_id, "after_id", v)?;
            }
            "limit" => {
                let in_range = match plain_number(&value) {
                    Ok(v) if (1..=GETALL_MAX_LIMIT).contains(&v) => Ok(v),
                    Ok(_) | Err(NotANumber::TooLarge) => Err(format!(
                        "limit must be from 1 to {GETALL_MAX_LIMIT} (the most rows one page gives), got {value:?}"
                    )),
                    Err(NotANumber::Spelling) => Err(format!(
                        "limit must be a whole number from 1 to {GETALL_MAX_LIMIT} in plain digits (no sign or \
                         leading zeros), got {value:?}"
                    )),
                };
                set_once(&mut limit, "limit", in_range.map_err(|message| ApiError::invalid("limit", message))?)?;
            }
            _ => {}
        }
    }
    Ok(Page { after_id: after_id.unwrap_or(0), limit })
}

/// Most characters in an `Idempotency-Key`, as the ledger's column holds it (VARCHAR(255)).
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 255;

/// The key of the `Idempotency-Key` header's `values` (`None` without the header): 1-255 printable ASCII characters
/// (space to `~`), sent bare (`abc`) or as the IETF draft's structured-field string (`"abc"`, where `\"` and `\\`
/// are the only escapes); both forms name the same key. Anything else, including the header sent twice, is refused.
pub fn parse_idempotency_key<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Result<Option<String>, ApiError> {
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ApiError::idempotency_key_invalid("Idempotency-Key was sent more than once; send it once"));
    }
    let value = value.trim_ascii();
    let key = match value.strip_prefix(b"\"") {
        Some(quoted) => unquote_sf_string(quoted)?,
        None => value.to_vec(),
    };
    if key.is_empty() {
        return Err(ApiError::idempotency_key_invalid(
            "Idempotency-Key is empty; a key is 1-255 printable ASCII characters, such as a UUID",
        ));
    }
    if let Some(at) = key.iter().position(|b| !(b' '..=b'~').contains(b)) {
        return Err(ApiError::idempotency_key_invalid(format!(
            "Idempotency-Key has a character that is not printable ASCII (byte 0x{:02x} at position {}); a key is \
             1-255 characters from space to ~",
            key[at],
            at + 1
        )));
    }
    if key.len() > IDEMPOTENCY_KEY_MAX_CHARS {
        return Err(ApiError::idempotency_key_invalid(format!(
            "Idempotency-Key is {} characters long; at most {IDEMPOTENCY_KEY_MAX_CHARS} are allowed",
            key.len()
        )));
    }
    // Printable ASCII only, checked above.
    String::from_utf8(key).map(Some).map_err(|_| ApiError::idempotency_key_invalid("Idempotency-Key is not ASCII"))
}

/// The characters of an RFC 8941 string after its opening quote: up to the closing quote, which must end the value.
fn unquote_sf_string(quoted: &[u8]) -> Result<Vec<u8>, ApiError> {
    let malformed = |why: &str| {
        ApiError::idempotency_key_invalid(format!(
            "Idempotency-Key starts with a double quote but is not a quoted string: {why} (in the quoted form, \\\" \
             and \\\\ are the only escapes and the closing quote ends the value)"
        ))
    };
    let mut key = Vec::with_capacity(quoted.len());
    let mut bytes = quoted.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'"' if bytes.as_slice().is_empty() => return Ok(key),
            b'"' => return Err(malformed("there is more after the closing quote")),
            b'\\' => match bytes.next() {
                Some(&escaped @ (b'"' | b'\\')) => key.push(escaped),
                _ => return Err(malformed("a backslash escapes something other than \\\" or \\\\")),
            },
            other => key.push(other),
        }
    }
    Err(malformed("the closing quote is missing"))
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
        let t = add("client_id=%D0%B8%D0%B2%D0%B0%D0%BD&amount=7")?;
        assert_eq!((t.client_id.as_str(), t.amount), ("иван", 7));
        Ok(())
    }

    #[test]
    fn amounts_and_ids_are_plain_digits_only() -> Result<(), ApiError> {
        // `+` in a query string is a space; %2B is a plus sign; %09 a tab; %E3%80%80 the full-width space.
        for amount in ["+5", "%2B5", "%205", "5%09", "005", "%E3%80%805", "5%20", "0x5", "٥"] {
            let (field, message) = rejected(add(&format!("client_id=1&amount={amount}")));
            assert_eq!(field, Some("amount"), "{amount}: {message}");
            assert!(message.contains("plain digits"), "{amount}: {message}");
        }
        assert_eq!(add("client_id=1&amount=9223372036854775807")?.amount, i64::MAX);
        for id in ["+1", "01", " 1", "1 ", "-1", "%31", "١"] {
            assert_eq!(parse_id(id).err().map(|e| e.field), Some(Some("id")), "{id:?}");
        }
        assert_eq!(parse_id("0")?, 0);
        assert_eq!(parse_page("after_id=+5").err().map(|e| e.field), Some(Some("after_id")));
        assert_eq!(parse_page("limit=010").err().map(|e| e.field), Some(Some("limit")));
        Ok(())
    }

    #[test]
    fn bad_percent_encoding_is_refused_not_replaced() {
        for (q, field) in [
            ("client_id=%E0%A4&amount=5", Some("client_id")),
            ("client_id=%zz&amount=5", Some("client_id")),
            ("client_id=abc%&amount=5", Some("client_id")),
            ("client_id=1&amount=%FF", Some("amount")),
            ("client%zz=1&amount=5", None),
        ] {
            let (got, message) = rejected(add(q));
            assert_eq!(got, field, "{q}: {message}");
            assert!(message.contains("not valid percent-encoded UTF-8"), "{q}: {message}");
        }
        let (_, message) = rejected(add_body("application/x-www-form-urlencoded", "client_id=%C3&amount=5"));
        assert!(message.contains("form body"), "{message}");
        assert!(parse_page("after_id=%zz").is_err());
    }

    #[test]
    fn line_separators_and_bidi_controls_are_refused() {
        for c in ["%E2%80%A8", "%E2%80%A9", "%E2%80%AE", "%E2%81%A6", "%E2%80%8F", "%D8%9C"] {
            let (field, message) = rejected(add(&format!("client_id=a{c}b&amount=5")));
            assert_eq!(field, Some("client_id"), "{c}: {message}");
        }
    }

    #[test]
    fn a_json_field_given_twice_is_refused() {
        for body in [r#"{"client_id":"1","amount":5,"amount":500}"#, r#"{"client_id":"1","client_id":"2","amount":5}"#]
        {
            let (field, message) = rejected(add_body("application/json", body));
            assert_eq!(field, None, "{body}");
            assert!(message.contains("duplicate field"), "{body}: {message}");
        }
    }

    #[test]
    fn json_and_form_bodies() -> Result<(), ApiError> {
        let t = add_body("application/json; charset=utf-8", r#"{"client_id":"7","amount":5}"#)?;
        assert_eq!((t.client_id.as_str(), t.amount), ("7", 5));
        let t = add_body("application/json", r#"{"client_id":7,"amount":5}"#)?;
        assert_eq!(t.client_id, "7");
        // Any literal of a whole number, as for amount (Schemathesis sent 711.0 as valid and got a 400).
        for (literal, spelled) in
            [("711.0", "711"), ("-2", "-2"), ("1e3", "1000"), ("18446744073709551615", "18446744073709551615")]
        {
            let t = add_body("application/json", &format!(r#"{{"client_id":{literal},"amount":5}}"#))?;
            assert_eq!(t.client_id, spelled, "{literal}");
        }
        for literal in ["7.5", "18446744073709551616", "true", "{}"] {
            let r = add_body("application/json", &format!(r#"{{"client_id":{literal},"amount":5}}"#));
            assert_eq!(rejected(r).0, Some("client_id"), "{literal}");
        }
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
            r#"{"client_id":"1","amount":1e-3}"#,
            r#"{"client_id":"1","amount":0.0}"#,
            r#"{"client_id":"1","amount":-5.0}"#,
            r#"{"client_id":"1","amount":9223372036854775808.0}"#,
            r#"{"client_id":"1","amount":1e19}"#,
            r#"{"client_id":"1","amount":true}"#,
        ] {
            assert_eq!(rejected(add_body("application/json", body)).0, Some("amount"), "{body}");
        }
    }

    /// JSON gives `1000.0` and `1e3` the value 1000, and so does the document's `"type": "integer"` (JSON Schema):
    /// Schemathesis sent `"amount": 27508.0` as valid and got a 400 (scripts/check-api.sh). Exactly, from the literal.
    #[test]
    fn a_json_amount_is_any_literal_of_a_whole_number() -> Result<(), ApiError> {
        for (literal, amount) in [
            ("27508.0", 27508),
            ("1e3", 1000),
            ("1.5E3", 1500),
            ("10000e-1", 1000),
            ("9007199254740993.0", 9_007_199_254_740_993),
            ("9223372036854775807.000", i64::MAX),
            ("922337203685477580.7e1", i64::MAX),
        ] {
            let body = format!(r#"{{"client_id":"1","amount":{literal}}}"#);
            assert_eq!(add_body("application/json", &body)?.amount, amount, "{literal}");
        }
        Ok(())
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

    fn message(r: Result<impl std::fmt::Debug, ApiError>) -> String {
        match r {
            Ok(v) => panic!("accepted {v:?}"),
            Err(e) => e.message,
        }
    }

    /// Plain digits past the largest number are out of range, not misspelt, and the answer says so with the bound
    /// (issue 21: `/get/51418873795017613246464` was told "must be a whole number in plain digits").
    #[test]
    fn numbers_too_large_are_told_the_bound_not_the_spelling() {
        for text in ["51418873795017613246464", "9223372036854775808"] {
            let m = message(parse_id(text));
            assert!(m.contains("at most 9223372036854775807"), "{m}");
            assert!(!m.contains("plain digits"), "{m}");
            let m = message(parse_page(&format!("after_id={text}")));
            assert!(m.contains("at most 9223372036854775807"), "{m}");
            assert!(!m.contains("plain digits"), "{m}");
            let m = message(parse_page(&format!("limit={text}")));
            assert!(m.contains("from 1 to 100000"), "{m}");
            assert!(!m.contains("plain digits"), "{m}");
        }
        for limit in ["0", "100001"] {
            let m = message(parse_page(&format!("limit={limit}")));
            assert!(m.starts_with("limit must be from 1 to 100000"), "{m}");
        }
        // Misspelt numbers are still told how to spell them.
        for text in ["+1", "01", "1.5", "-9223372036854775809", ""] {
            assert!(message(parse_id(text)).contains("plain digits"), "{text:?}");
            assert!(message(parse_page(&format!("after_id={text}"))).contains("plain digits"), "{text:?}");
            assert!(message(parse_page(&format!("limit={text}"))).contains("plain digits"), "{text:?}");
        }
        assert_eq!(parse_id("9223372036854775807").ok(), Some(i64::MAX));
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
