//! Configuration errors and credentials, as an operator meets them.

mod common;

use std::process::Command;

use billing_testkit::{ServiceProcess, shared, unique_name};
use common::{BIN, READY_TIMEOUT, TestApp, TestResult, client};
use reqwest::StatusCode;

fn run_with(env: &[(&str, &str)]) -> Result<(Option<i32>, String), String> {
    let output = Command::new(BIN).env_clear().envs(env.iter().copied()).output().map_err(|e| e.to_string())?;
    Ok((output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned()))
}

#[test]
fn missing_database_url_is_one_clear_line() -> Result<(), String> {
    let (code, stderr) = run_with(&[])?;
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("billing: configuration error: DATABASE_URL is not set"), "{stderr}");
    Ok(())
}

#[test]
fn malformed_database_url_never_prints_the_password() -> Result<(), String> {
    for url in ["postgres://billing:hunter2pw@db:port/billing", "mysql://billing:hunter2pw@db/billing", "hunter2pw"] {
        let (code, stderr) = run_with(&[("DATABASE_URL", url)])?;
        assert_eq!(code, Some(2), "{url}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("DATABASE_URL"), "{stderr}");
        assert!(!stderr.contains("hunter2pw"), "password printed: {stderr}");
    }
    Ok(())
}

#[test]
fn bad_settings_are_named() -> Result<(), String> {
    let url = ("DATABASE_URL", "postgres://u@127.0.0.1/d");
    for (name, value) in [("DATABASE_POOL_SIZE", "many"), ("LISTEN_ADDR", "localhost"), ("DATABASE_TIMEOUT_SECS", "0")]
    {
        let (code, stderr) = run_with(&[url, (name, value)])?;
        assert_eq!(code, Some(2));
        assert!(stderr.contains(name), "{stderr}");
    }
    Ok(())
}

#[test]
fn port_in_use_is_a_clear_error() -> Result<(), String> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = taken.local_addr().map_err(|e| e.to_string())?.to_string();
    let (code, stderr) = run_with(&[("DATABASE_URL", "postgres://u@127.0.0.1/d"), ("LISTEN_ADDR", &addr)])?;
    assert_eq!(code, Some(1));
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
    Ok(())
}

/// A password with every character that breaks URLs, given through DATABASE_PASSWORD as a Secret would give it,
/// against a role that must authenticate with it (SCRAM).
#[tokio::test]
async fn password_from_its_own_variable_needs_no_encoding() -> TestResult {
    let role = unique_name("payer");
    let db = unique_name("t");
    let password = r#"p@ss:w/o?r#d%20&=+ 'quoted' "double" \back;slash"#;
    let sql_password = password.replace('\'', "''");
    shared().psql("postgres", &format!("CREATE ROLE \"{role}\" LOGIN PASSWORD '{sql_password}'"))?;
    shared().psql("postgres", &format!("CREATE DATABASE \"{db}\" OWNER \"{role}\""))?;
    let url = format!("postgres://{role}@127.0.0.1:{}/{db}", shared().port());

    let mut service = ServiceProcess::spawn(BIN.as_ref(), &[("DATABASE_URL", &url), ("DATABASE_PASSWORD", password)])?;
    service.wait_ready(READY_TIMEOUT)?;
    let r = client()?.post(service.url("/add?client_id=1&amount=1")).send().await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(!service.log().contains("w/o?r#d"), "the password reached the log");

    // Without the password the same URL is refused by the server, and the service says so without hanging.
    let mut refused = ServiceProcess::spawn(BIN.as_ref(), &[("DATABASE_URL", &url), ("DATABASE_WAIT_SECS", "1")])?;
    let status = refused.wait_exit(std::time::Duration::from_secs(20))?;
    assert_eq!(status.code(), Some(1));
    assert!(refused.log().contains("gave up connecting"), "{}", refused.log());
    Ok(())
}

/// `billing healthcheck [URL]`, the image's HEALTHCHECK: exit 0 when the URL answers 200, 1 with one line saying
/// why otherwise (another status, nothing listening).
#[test]
fn healthcheck_subcommand() -> Result<(), String> {
    let app = TestApp::start()?;
    let check = |url: &str| Command::new(BIN).args(["healthcheck", url]).output().map_err(|e| e.to_string());
    let output = check(&app.url("/healthz"))?;
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stderr.is_empty() && output.stdout.is_empty());
    let output = check(&app.url("/no/such/path"))?;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        format!("billing healthcheck: {} answered 404", app.url("/no/such/path"))
    );
    // Nothing listens on port 1.
    let output = check("http://127.0.0.1:1/healthz")?;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("billing healthcheck: cannot connect"));
    let output = Command::new(BIN).arg("--version").output().map_err(|e| e.to_string())?;
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), format!("billing {}", env!("CARGO_PKG_VERSION")));
    Ok(())
}
