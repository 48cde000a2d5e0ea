//! The id that ties a request's response, its error body and its log lines together.
//!
//! Taken from the client's `X-Request-Id` when it is a sensible token (so a caller or a proxy can follow its own id
//! through billing's logs), generated otherwise. It is set for the whole handling of one request as a task-local,
//! so error bodies and log lines read it without every function passing it along.

use warp::http::{HeaderMap, HeaderValue};

pub const HEADER: &str = "x-request-id";

/// Longest client-supplied id kept; longer ones are replaced, not truncated, so an id is never silently altered.
pub const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: RequestId;
}

/// Held as the header value it is sent back as: cloning it shares its bytes, and a generated id is one allocation
/// (not a `String`, then an `Arc<str>`, then the header's copy: three per request, docs/benchmarks.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The client's id if it is 1 to [`MAX_LEN`] characters of `A-Z a-z 0-9 - _ . :`, else a new UUID. The
    /// character set keeps ids safe to print in a log line or a JSON string without escaping.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        headers
            .get(HEADER)
            .filter(|v| v.to_str().is_ok_and(is_valid))
            .map_or_else(Self::generate, |v| RequestId(v.clone()))
    }

    pub fn generate() -> Self {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
        // A UUID's text is visible ASCII; the fallback is unreachable in practice.
        RequestId(HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid")))
    }

    pub fn as_str(&self) -> &str {
        // Only valid ids (visible ASCII) are kept or generated.
        self.0.to_str().unwrap_or("invalid")
    }

    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }

    /// Runs `fut` with this id as the current one. Not an `async fn`: that would be one more future around `fut`,
    /// and `fut` would be copied into it and again into the task-local's on the first poll.
    pub fn scope<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, fut)
    }
}

pub fn is_valid(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The id of the request being handled on this task, if any.
pub fn current() -> Option<RequestId> {
    CURRENT.try_with(Clone::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &[u8]) -> Result<RequestId, String> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_bytes(value).map_err(|e| e.to_string())?);
        Ok(RequestId::from_headers(&headers))
    }

    #[test]
    fn a_sensible_client_id_is_kept() -> Result<(), String> {
        assert_eq!(with(b"abc-123_x.y:z")?.as_str(), "abc-123_x.y:z");
        let longest = "a".repeat(MAX_LEN);
        assert_eq!(with(longest.as_bytes())?.as_str(), longest);
        Ok(())
    }

    #[test]
    fn anything_else_gets_a_fresh_uuid() -> Result<(), String> {
        for bad in [&b"two words"[..], b"quote\"", b"{\"a\":1}", "é".as_bytes()] {
            let id = with(bad)?;
            assert_eq!(id.as_str().len(), 36, "{bad:?} was kept as {id:?}");
            assert!(is_valid(id.as_str()));
        }
        assert_eq!(with("a".repeat(MAX_LEN + 1).as_bytes())?.as_str().len(), 36);
        Ok(())
    }
}
