//! What an operator must know about the ledger table at every start: rules that existing rows break (constraints
//! left `NOT VALID` by the adoption of a Flask table or by a migration that tightened a rule), named with the ids of
//! those rows, and columns billing does not write that would make every `/add` fail.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::schema::Conn;

/// Ids named per rule in the log; the count says how many more there are.
pub const IDS_SHOWN: i64 = 20;

const HOW_TO_FIX: &str = "see \"Adopting the course's Flask database\" in docs/operations.md";

#[derive(QueryableByName)]
struct Unvalidated {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    rule: String,
    #[diesel(sql_type = Text)]
    definition: String,
}

#[derive(QueryableByName)]
struct Breaking {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    total: i64,
}

#[derive(QueryableByName)]
struct Required {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Logs the report. It only reads; a query that fails is itself reported, since the service can still serve.
pub fn report(conn: &mut Conn) {
    if let Err(e) = unvalidated_rules(conn).and_then(|()| required_columns(conn)) {
        log::warn!("could not check the transactions table for rows that break its rules: {e}");
    }
}

fn unvalidated_rules(conn: &mut Conn) -> QueryResult<()> {
    let rules: Vec<Unvalidated> = diesel::sql_query(
        "SELECT conname::text AS name, pg_get_expr(conbin, conrelid) AS rule, \
         pg_get_constraintdef(oid) AS definition FROM pg_constraint \
         WHERE conrelid = 'transactions'::regclass AND contype = 'c' AND NOT convalidated ORDER BY conname",
    )
    .load(conn)?;
    for rule in rules {
        // The rule is PostgreSQL's own text of the constraint's expression, so it is valid SQL on this table.
        let breaking: Vec<Breaking> = diesel::sql_query(format!(
            "SELECT id, count(*) OVER () AS total FROM transactions WHERE ({}) IS FALSE ORDER BY id LIMIT {IDS_SHOWN}",
            rule.rule
        ))
        .load(conn)?;
        let Some(total) = breaking.first().map(|b| b.total) else {
            log::warn!(
                "transactions: constraint {} is NOT VALID but no row breaks it any more; make it valid with \
                 ALTER TABLE transactions VALIDATE CONSTRAINT {}",
                rule.name,
                rule.name
            );
            continue;
        };
        let ids: Vec<String> = breaking.iter().map(|b| b.id.to_string()).collect();
        let more = total - breaking.len() as i64;
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        let rows =
            if total == 1 { "1 existing row breaks".to_string() } else { format!("{total} existing rows break") };
        log::warn!(
            "transactions: {rows} constraint {} {}, {} {}{more}; they are kept and served as they are, new writes \
             are checked; {HOW_TO_FIX}",
            rule.name,
            rule.definition,
            if total == 1 { "id" } else { "ids" },
            ids.join(", ")
        );
    }
    Ok(())
}

/// A column of the table's own (a Flask model's extra field) that is NOT NULL without a default: billing's INSERT
/// names only client_id and amount, so PostgreSQL refuses every new payment.
fn required_columns(conn: &mut Conn) -> QueryResult<()> {
    let columns: Vec<Required> = diesel::sql_query(
        "SELECT attname::text AS name FROM pg_attribute WHERE attrelid = 'transactions'::regclass AND attnum > 0 \
         AND NOT attisdropped AND attnotnull AND NOT atthasdef AND attidentity = '' AND attgenerated = '' \
         AND attname NOT IN ('id', 'client_id', 'amount', 'created_at') ORDER BY attnum",
    )
    .load(conn)?;
    for column in columns {
        log::error!(
            "transactions: column {name} is NOT NULL without a default and billing does not write it, so every \
             POST /add will be refused until it has one (ALTER TABLE transactions ALTER COLUMN {name} SET DEFAULT \
             ...) or allows NULL (ALTER TABLE transactions ALTER COLUMN {name} DROP NOT NULL); {HOW_TO_FIX}",
            name = column.name
        );
    }
    Ok(())
}
