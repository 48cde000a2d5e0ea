//! Text rules shared by the layers: which strings billing accepts where a line of text must stay one unambiguous
//! line (the transaction log's host name, a client id), and the strict percent-decoding of URLs and forms.

/// `%XX` escapes decoded, or `None` when a `%` is not followed by two hex digits or the bytes are not UTF-8.
/// Shared by the form decoder (http/validation.rs) and the TLS keys of `DATABASE_URL` (config/tls.rs).
pub fn percent_decode_strict(part: &[u8]) -> Option<String> {
    let bad_escape = part
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'%' && !part.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)));
    if bad_escape {
        return None;
    }
    percent_encoding::percent_decode(part).decode_utf8().ok().map(std::borrow::Cow::into_owned)
}

/// The host name of transaction-log lines (`BILLING_HOSTNAME` or the OS host name). The line
/// `... host <h>, client <c>, amount <n>` reads back unambiguously only if the host holds no comma (the first
/// ", client " must be the separator; client_id may hold commas, the amount never does) and nothing that breaks or
/// reorders a line, as client_id may not. Returns why it is refused.
pub fn validate_host_name(host_name: &str) -> Result<(), String> {
    if host_name.is_empty() {
        return Err("must not be empty".into());
    }
    match host_name.chars().find(|c| *c == ',' || c.is_control() || is_line_or_bidi_control(*c)) {
        Some(c) => Err(format!(
            "must not contain a comma, control, line-separator or bidirectional-control character, found U+{:04X}",
            u32::from(c)
        )),
        None => Ok(()),
    }
}

/// The Unicode line and paragraph separators and the bidi controls, which `char::is_control` does not cover.
pub fn is_line_or_bidi_control(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_that_would_make_a_log_line_ambiguous_are_refused() {
        for host in ["billing-stateful-0", "my laptop.local", "хост", "host client 1"] {
            assert_eq!(validate_host_name(host), Ok(()), "{host}");
        }
        for host in ["", "a, client b", "a,b", "a\nb", "a\u{2028}b", "a\u{202E}b", "a\u{85}b"] {
            assert!(validate_host_name(host).is_err(), "{host:?}");
        }
    }
}
