//! Every transaction-log line billing can write reads back as exactly what was written: for any host name and
//! client_id the validators accept and any valid amount, `format_line` followed by the strict parser the other
//! tests use gives back the same time, host, client and amount. Inputs are built from the pieces that could fool
//! a parser (", amount 999", ", client ", "host ", commas, line breaks, bidi controls, wide characters) plus
//! arbitrary characters; whatever would not read back must be refused by the validators, so it is never written.

mod common;

use billing::http::validation::{CLIENT_ID_MAX_CHARS, validate_client_id};
use billing::ledger::txlog::format_line;
use billing::models::Transaction;
use billing::text::validate_host_name;
use chrono::{DateTime, Utc};
use common::{LogLine, parse_log_line};
use proptest::prelude::*;
use proptest::test_runner::Config;

/// Pieces of separators and keywords, whitespace of several kinds, and characters of every UTF-8 length.
fn printable_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            ",", ", ", ", amount ", ", amount 999", ", amount -1", "amount", ", client ", "client ", "host ",
            ": host ", " ", "  ", "\u{a0}", "\u{3000}", "0", "42", "9223372036854775807", ":", "-", ".", "é", "я",
            "✓", "😀", "\u{fffd}",
        ])
        .prop_map(str::to_string),
        1 => any::<char>().prop_map(String::from),
    ]
}

/// The characters the validators exist to refuse.
fn breaking_piece() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "\n", "\r", "\r\n", "\t", "\u{85}", "\u{7f}", "\u{1}", "\u{2028}", "\u{2029}", "\u{202E}", "\u{2066}",
        "\u{200F}", "\u{61C}",
    ])
    .prop_map(str::to_string)
}

/// Mostly printable text (which the round trip must survive), sometimes with a breaking character mixed in.
fn text(max_pieces: usize) -> impl Strategy<Value = String> {
    let printable = prop::collection::vec(printable_piece(), 0..max_pieces);
    let mixed = prop::collection::vec(prop_oneof![4 => printable_piece(), 1 => breaking_piece()], 0..max_pieces);
    prop_oneof![3 => printable, 1 => mixed].prop_map(|pieces| pieces.concat())
}

/// Client ids of exactly the maximum length with a risky piece somewhere inside.
fn client_at_the_limit() -> impl Strategy<Value = String> {
    let risky = prop::sample::select(vec![", amount 1", ", client x", "host ,", " я✓😀"]);
    (0..=90usize, risky).prop_map(|(before, risky)| {
        let after = CLIENT_ID_MAX_CHARS - before - risky.chars().count();
        format!("{}{risky}{}", "x".repeat(before), "y".repeat(after))
    })
}

/// Times PostgreSQL's `now()` gives (the line's time is the row's `created_at`), to the microsecond.
fn created_at() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..253_402_300_799, 0u32..1_000_000)
        .prop_filter_map("a representable time", |(secs, micros)| DateTime::from_timestamp(secs, micros * 1000))
}

fn round_trip(host: &str, client: &str, amount: i64, at: DateTime<Utc>) -> Result<LogLine, String> {
    let t = Transaction { id: 1, client_id: Some(client.to_string()), amount: Some(amount), created_at: at };
    let line = format_line(host, &t);
    let body = line.strip_suffix('\n').ok_or("a line must end with a newline")?;
    if body.contains(['\n', '\r']) {
        return Err(format!("more than one line: {line:?}"));
    }
    parse_log_line(body)
}

fn check(host: &str, client: &str, amount: i64, at: DateTime<Utc>) -> Result<(), TestCaseError> {
    if validate_host_name(host).is_err() || validate_client_id(client.to_string()).is_err() {
        // Refused at configuration or by /add: such a line is never written.
        return Ok(());
    }
    let parsed = round_trip(host, client, amount, at).map_err(TestCaseError::fail)?;
    let expected = LogLine {
        time: at.format("%Y-%m-%d %H:%M:%S").to_string(),
        host: host.to_string(),
        client: client.to_string(),
        amount,
    };
    prop_assert_eq!(parsed, expected);
    Ok(())
}

proptest! {
    #![proptest_config(Config { cases: 20_000, ..Config::default() })]

    #[test]
    fn every_accepted_line_reads_back_exactly(
        host in prop_oneof![Just("billing-stateful-0".to_string()), text(6)],
        client in prop_oneof![text(40), client_at_the_limit()],
        amount in prop_oneof![1i64..1000, 1i64..=i64::MAX, Just(i64::MAX)],
        at in created_at(),
    ) {
        check(&host, &client, amount, at)?;
    }
}

/// The generators are worth something only if they produce both outcomes often: accepted adversarial ids (so the
/// round trip is exercised on them) and refused ones.
#[test]
fn the_generators_cover_accepted_and_refused_inputs() -> Result<(), String> {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut accepted, mut refused, mut tricky) = (0, 0, 0);
    for _ in 0..5_000 {
        let client = text(40).new_tree(&mut runner).map_err(|e| e.to_string())?.current();
        if validate_client_id(client.clone()).is_ok() {
            accepted += 1;
            tricky += usize::from(client.contains(", amount ") || client.contains(", client "));
        } else {
            refused += 1;
        }
    }
    assert!(accepted > 500 && refused > 500 && tricky > 100, "accepted {accepted}, refused {refused}, tricky {tricky}");
    Ok(())
}

/// What would forge or garble a line is refused by the validators, never written.
#[test]
fn what_would_break_a_line_is_refused() {
    for bad in ["a\nb", "a\rb", "a\u{85}b", "a\u{2028}b", "a\u{2029}b", "a\u{202E}b", "a\u{2066}b", "a\u{7f}b", ""] {
        assert!(validate_client_id(bad.to_string()).is_err(), "client {bad:?}");
        assert!(validate_host_name(bad).is_err(), "host {bad:?}");
    }
    assert!(validate_client_id("x".repeat(CLIENT_ID_MAX_CHARS + 1)).is_err());
    // A comma in the host would let ", client " appear before the real separator.
    assert!(validate_host_name("evil, client 1").is_err());
    assert!(round_trip("evil, client 1", "2", 5, DateTime::UNIX_EPOCH).is_ok_and(|l| l.host != "evil, client 1"));
}

#[test]
fn the_nastiest_accepted_client_ids_read_back() -> Result<(), TestCaseError> {
    let at = DateTime::UNIX_EPOCH;
    for client in [
        ", amount 999",
        "x, amount 999, amount 1",
        ", client , amount ",
        "host a, client b, amount 3",
        " leading and trailing ",
        "я✓😀\u{a0}\u{3000}",
        "amount",
        "9223372036854775807",
    ] {
        prop_assert!(validate_client_id(client.to_string()).is_ok(), "{:?} should be accepted", client);
        check("billing-stateful-0", client, 7, at)?;
        check("host client amount", client, i64::MAX, at)?;
    }
    let longest = "я".repeat(CLIENT_ID_MAX_CHARS);
    prop_assert!(validate_client_id(longest.clone()).is_ok());
    check("h", &longest, 1, at)
}
