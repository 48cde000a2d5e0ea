//! `GET /openapi.json`: the OpenAPI 3.1 document of the API, billing/openapi.json, embedded in the binary.
//!
//! The document is written by hand and checked against the code by the tests below, so it cannot drift: the paths
//! and methods are the route table's, the error kinds are [`ErrorCode`]'s, and the input rules are validation.rs's.
//! scripts/check-api.sh then runs a fuzzer (Schemathesis) against the real binary with it.
//!
//! [`ErrorCode`]: crate::error::ErrorCode

use warp::http::header;
use warp::reply::{Reply, Response};

/// billing/openapi.json, as the repository holds it.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

pub fn document() -> Response {
    warp::reply::with_header(DOCUMENT, header::CONTENT_TYPE, "application/json").into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::DOCUMENT;
    use crate::error::ErrorCode;
    use crate::http::handlers::MAX_BODY_BYTES;
    use crate::http::routes::ROUTES;
    use crate::http::validation::{CLIENT_ID_MAX_CHARS, GETALL_MAX_LIMIT};
    use crate::text::is_line_or_bidi_control;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Every variant of [`ErrorCode`]: the `match` fails to compile when one is missing from the list.
    macro_rules! every_error_code {
        ($($variant:ident),* $(,)?) => {{
            fn exhaustive(code: ErrorCode) {
                match code {
                    $(ErrorCode::$variant => {})*
                }
            }
            let _ = exhaustive;
            [$(ErrorCode::$variant),*]
        }};
    }

    fn document() -> Result<Value, serde_json::Error> {
        serde_json::from_str(DOCUMENT)
    }

    fn at<'v>(value: &'v Value, pointer: &str) -> Result<&'v Value, String> {
        value.pointer(pointer).ok_or_else(|| format!("the document has nothing at {pointer}"))
    }

    /// `value`, or what its `$ref` points to (refs within the document only).
    fn resolve<'v>(doc: &'v Value, value: &'v Value) -> Result<&'v Value, String> {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let pointer =
                    reference.strip_prefix('#').ok_or_else(|| format!("{reference} is not in the document"))?;
                resolve(doc, at(doc, pointer)?)
            }
            None => Ok(value),
        }
    }

    fn operations(doc: &Value) -> Result<Vec<(String, String, &Value)>, String> {
        let paths = at(doc, "/paths")?.as_object().ok_or("paths is not an object")?;
        let mut ops = Vec::new();
        for (path, item) in paths {
            for (method, op) in item.as_object().ok_or_else(|| format!("{path} is not an object"))? {
                ops.push((path.clone(), method.clone(), op));
            }
        }
        Ok(ops)
    }

    #[test]
    fn it_is_an_openapi_3_1_document() -> TestResult {
        let doc = document()?;
        assert!(at(&doc, "/openapi")?.as_str().is_some_and(|v| v.starts_with("3.1.")), "{}", doc["openapi"]);
        assert_eq!(at(&doc, "/info/version")?.as_str(), Some(env!("CARGO_PKG_VERSION")));
        Ok(())
    }

    /// The paths are exactly the route table's, each with exactly the methods its `Allow` lists: a route added to
    /// routes.rs and not documented fails here, and so does a documented path or method the router does not answer.
    #[test]
    fn paths_and_methods_are_the_route_tables() -> TestResult {
        let doc = document()?;
        let paths = at(&doc, "/paths")?.as_object().ok_or("paths is not an object")?;
        let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
        let routed: BTreeSet<&str> = ROUTES.iter().map(|r| r.template).collect();
        assert_eq!(documented, routed, "the document's paths are not the route table's");
        for route in ROUTES {
            let item = paths.get(route.template).and_then(Value::as_object).ok_or(route.template)?;
            let methods: BTreeSet<String> = item.keys().cloned().collect();
            let allowed: BTreeSet<String> = route.allow.split(", ").map(str::to_ascii_lowercase).collect();
            assert_eq!(methods, allowed, "{}: documented methods vs Allow {:?}", route.template, route.allow);
        }
        Ok(())
    }

    /// The document's error kinds are exactly the names `ErrorCode` has.
    #[test]
    fn error_kinds_are_the_error_codes() -> TestResult {
        let doc = document()?;
        let kinds = at(&doc, "/components/schemas/ErrorKind/enum")?.as_array().ok_or("ErrorKind has no enum")?;
        let documented: BTreeSet<&str> = kinds.iter().filter_map(Value::as_str).collect();
        assert_eq!(documented.len(), kinds.len(), "ErrorKind's enum has a duplicate or a non-string");
        let codes = every_error_code!(
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
        );
        let named: BTreeSet<&str> = codes.iter().map(|c| c.as_str()).collect();
        assert_eq!(named.len(), codes.len(), "two ErrorCodes share a name");
        assert_eq!(documented, named, "the document's error kinds are not ErrorCode's");
        Ok(())
    }

    /// The `Error` schema has the body's fields, and every 4xx and 5xx the document lists answers it.
    #[test]
    fn every_error_answer_is_the_error_body() -> TestResult {
        let doc = document()?;
        let error = at(&doc, "/components/schemas/Error")?;
        let fields: BTreeSet<&str> =
            error["properties"].as_object().ok_or("Error has no properties")?.keys().map(String::as_str).collect();
        assert_eq!(fields, BTreeSet::from(["error", "field", "message", "request_id"]));
        assert_eq!(error["required"], serde_json::json!(["error", "message"]));
        for (path, method, op) in operations(&doc)? {
            let responses = op["responses"].as_object().ok_or_else(|| format!("{method} {path}: no responses"))?;
            assert!(!responses.is_empty(), "{method} {path}: no responses");
            for (status, response) in responses {
                let response = resolve(&doc, response)?;
                let headers = response["headers"].as_object();
                assert!(
                    headers.is_some_and(|h| h.contains_key("X-Request-Id")),
                    "{method} {path} {status}: no X-Request-Id header"
                );
                let code: u16 = status.parse()?;
                if code < 400 {
                    continue;
                }
                let content = &response["content"];
                if method == "head" {
                    assert!(content.is_null(), "{method} {path} {status}: a HEAD answer has no body");
                    continue;
                }
                let types: Vec<&String> = content.as_object().map(|c| c.keys().collect()).unwrap_or_default();
                assert_eq!(types, ["application/json"], "{method} {path} {status}");
                assert_eq!(
                    content["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
                    "{method} {path} {status}"
                );
            }
        }
        Ok(())
    }

    /// Every `$ref` points at something in the document.
    #[test]
    fn every_reference_resolves() -> TestResult {
        fn walk(doc: &Value, value: &Value, refs: &mut usize) -> Result<(), String> {
            match value {
                Value::Object(map) => {
                    if map.contains_key("$ref") {
                        resolve(doc, value)?;
                        *refs += 1;
                    }
                    map.values().try_for_each(|v| walk(doc, v, refs))
                }
                Value::Array(items) => items.iter().try_for_each(|v| walk(doc, v, refs)),
                _ => Ok(()),
            }
        }
        let doc = document()?;
        let mut refs = 0;
        walk(&doc, &doc, &mut refs)?;
        assert!(refs > 50, "{refs}");
        Ok(())
    }

    /// `client_id`'s pattern refuses exactly the characters validation.rs refuses, rendered from the same rules.
    #[test]
    fn client_id_rules_are_validations() -> TestResult {
        let refused = |c: char| c.is_control() || is_line_or_bidi_control(c);
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for c in (0..=0x10FFFF).filter_map(char::from_u32).filter(|c| refused(*c)) {
            let c = u32::from(c);
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == c => *end = c,
                _ => ranges.push((c, c)),
            }
        }
        let class: String = ranges
            .iter()
            .map(|(start, end)| match start == end {
                true => format!("\\u{start:04x}"),
                false => format!("\\u{start:04x}-\\u{end:04x}"),
            })
            .collect();
        let doc = document()?;
        let client_id = at(&doc, "/components/schemas/ClientId")?;
        assert_eq!(client_id["pattern"], format!("^[^{class}]{{1,{CLIENT_ID_MAX_CHARS}}}$"));
        assert_eq!(client_id["maxLength"], CLIENT_ID_MAX_CHARS);
        assert_eq!(client_id["minLength"], 1);
        Ok(())
    }

    /// The numeric bounds are the code's.
    #[test]
    fn numbers_are_bounded_as_the_code_bounds_them() -> TestResult {
        let doc = document()?;
        for pointer in [
            "/components/schemas/Amount",
            "/components/parameters/id/schema",
            "/components/parameters/after_id/schema",
            "/components/schemas/Payment/properties/id",
        ] {
            assert_eq!(at(&doc, pointer)?["maximum"], i64::MAX, "{pointer}");
        }
        assert_eq!(at(&doc, "/components/schemas/Amount/minimum")?, 1);
        assert_eq!(at(&doc, "/components/parameters/after_id/schema/minimum")?, 0);
        assert_eq!(at(&doc, "/components/parameters/limit/schema/maximum")?, GETALL_MAX_LIMIT);
        assert_eq!(at(&doc, "/components/parameters/limit/schema/minimum")?, 1);
        let add = at(&doc, "/paths/~1add/post/description")?.as_str().ok_or("no description")?;
        assert!(add.contains(&format!("over {MAX_BODY_BYTES} bytes")), "{add}");
        Ok(())
    }
}
