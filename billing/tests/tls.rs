//! TLS to PostgreSQL, against real servers with `ssl = on` and certificates signed by a CA made here: every
//! `sslmode` connects or refuses as libpq does, checked side by side with the real psql on the same URL, and the
//! pool, the shared read connection and the cancel requests all work over TLS.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use billing_testkit::{PgOptions, PgServer, ServerTls, ServiceProcess, TestCa, http_request, unique_name};
use common::{BIN, READY_TIMEOUT, TestResult, client, lock_transactions_in};
use reqwest::StatusCode;
use serde_json::Value;

const PASSWORD: &str = "tls-s3cret-pw";

/// What a client made of one URL: connected with or without TLS, or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Tls,
    Plain,
    Refused,
}

/// A directory the test owns: the CA files, the HOME directories, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(unique_name("billing-tls"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        Ok(Scratch(dir))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A HOME whose ~/.postgresql/root.crt is `ca` (or absent), for the default sslrootcert.
    fn home(&self, name: &str, ca: Option<&TestCa>) -> Result<PathBuf, String> {
        let home = self.path(name);
        std::fs::create_dir_all(home.join(".postgresql")).map_err(|e| e.to_string())?;
        if let Some(ca) = ca {
            ca.write_cert(&home.join(".postgresql/root.crt"))?;
        }
        Ok(home)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The test's CAs and servers.
struct World {
    scratch: Scratch,
    good_ca: PathBuf,
    wrong_ca: PathBuf,
    /// `ssl = on`, certificate for 127.0.0.1 and localhost signed by the good CA; the role `tls_user` may connect
    /// only with TLS (hostssl), `plain_user` only without (hostnossl).
    tls: PgServer,
    /// `ssl = on`, certificate signed by the good CA for db.example.com only.
    other_name: PgServer,
    /// `ssl = off`.
    plain: PgServer,
    /// `ssl = on` with a self-signed certificate that is also a CA, and that certificate as a root file.
    self_signed: PgServer,
    self_signed_root: PathBuf,
    /// An empty HOME: no default root certificate.
    empty_home: PathBuf,
    /// HOMEs whose ~/.postgresql/root.crt is the good or the wrong CA.
    good_home: PathBuf,
    wrong_home: PathBuf,
}

fn create_roles(server: &PgServer, roles: &[&str]) -> Result<(), String> {
    for role in roles {
        server.psql("postgres", &format!("CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"))?;
    }
    Ok(())
}

impl World {
    fn start() -> Result<Self, String> {
        let scratch = Scratch::new()?;
        let good = TestCa::new("billing test CA")?;
        let wrong = TestCa::new("some other CA")?;
        let (good_ca, wrong_ca) = (scratch.path("good-ca.pem"), scratch.path("wrong-ca.pem"));
        good.write_cert(&good_ca)?;
        wrong.write_cert(&wrong_ca)?;
        let hba_first = [
            "hostssl all tls_user 127.0.0.1/32 scram-sha-256",
            "hostnossl all tls_user 127.0.0.1/32 reject",
            "hostnossl all plain_user 127.0.0.1/32 scram-sha-256",
            "hostssl all plain_user 127.0.0.1/32 reject",
        ];
        let tls = PgServer::start_tls(
            PgOptions::default(),
            ServerTls {
                cert: good.issue(&["127.0.0.1", "localhost"])?,
                hba_first: hba_first.iter().map(ToString::to_string).collect(),
            },
        )?;
        create_roles(&tls, &["payer", "tls_user", "plain_user"])?;
        let other_name = PgServer::start_tls(
            PgOptions::default(),
            ServerTls { cert: good.issue(&["db.example.com"])?, hba_first: Vec::new() },
        )?;
        create_roles(&other_name, &["payer"])?;
        let plain = PgServer::start(PgOptions::default())?;
        create_roles(&plain, &["payer"])?;
        let own = TestCa::self_signed_ca_server(&["127.0.0.1"])?;
        let self_signed_root = scratch.path("self-signed.pem");
        std::fs::write(&self_signed_root, &own.cert_pem).map_err(|e| e.to_string())?;
        let self_signed = PgServer::start_tls(PgOptions::default(), ServerTls { cert: own, hba_first: Vec::new() })?;
        create_roles(&self_signed, &["payer"])?;
        let empty_home = scratch.home("home-empty", None)?;
        let good_home = scratch.home("home-good", Some(&good))?;
        let wrong_home = scratch.home("home-wrong", Some(&wrong))?;
        Ok(World {
            scratch,
            good_ca,
            wrong_ca,
            tls,
            other_name,
            plain,
            self_signed,
            self_signed_root,
            empty_home,
            good_home,
            wrong_home,
        })
    }
}

/// One URL, tried by billing and by psql.
struct Case<'a> {
    name: String,
    server: &'a PgServer,
    user: &'a str,
    /// The URL's query, without the `?`.
    query: String,
    env: Vec<(&'static str, String)>,
    home: &'a Path,
    expect: Verdict,
    /// psql's verdict where billing deliberately differs from libpq (see docs/operations.md); `None`: the same.
    psql_differs: Option<Verdict>,
    /// What billing's one-line refusal must say.
    says: String,
    /// DATABASE_WAIT_SECS: long for refusals billing must make at once, short for ones it retries as before.
    wait_secs: u64,
}

impl<'a> Case<'a> {
    fn new(name: &str, server: &'a PgServer, home: &'a Path, query: impl Into<String>, expect: Verdict) -> Self {
        Case {
            name: name.into(),
            server,
            user: "payer",
            query: query.into(),
            env: Vec::new(),
            home,
            expect,
            psql_differs: None,
            says: String::new(),
            wait_secs: 30,
        }
    }

    fn says(mut self, text: impl Into<String>) -> Self {
        self.says = text.into();
        self
    }

    fn env(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.env.push((name, value.into()));
        self
    }

    fn user(mut self, user: &'a str) -> Self {
        self.user = user;
        self
    }

    fn retried(mut self) -> Self {
        self.wait_secs = 1;
        self
    }

    fn psql_differs(mut self, verdict: Verdict) -> Self {
        self.psql_differs = Some(verdict);
        self
    }
}

/// psql's verdict on `url`, with the case's environment and HOME and nothing else of this process's.
fn psql_verdict(case: &Case, url: &str) -> Result<(Verdict, String), String> {
    let output = Command::new(case.server.psql_path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", case.home)
        .env("PGCONNECT_TIMEOUT", "5")
        .envs(case.env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["-X", "-A", "-t", "-w", "-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", url])
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().replace('\n', " / ");
    Ok(match (output.status.success(), stdout.as_str()) {
        (true, "t") => (Verdict::Tls, String::new()),
        (true, "f") => (Verdict::Plain, String::new()),
        (true, other) => return Err(format!("psql printed {other:?}")),
        (false, _) => (Verdict::Refused, stderr),
    })
}

/// billing's verdict: ready (then whether each of its connections, pooled and shared, uses TLS), or exited with
/// one line that says why.
fn billing_verdict(case: &Case, url: &str, db: &str) -> Result<(Verdict, String), String> {
    let wait = case.wait_secs.to_string();
    let mut env = vec![("DATABASE_URL", url), ("DATABASE_WAIT_SECS", wait.as_str())];
    let home = case.home.display().to_string();
    env.push(("HOME", &home));
    env.extend(case.env.iter().map(|(k, v)| (*k, v.as_str())));
    let mut service = ServiceProcess::spawn(BIN.as_ref(), &env)?;
    let started = Instant::now();
    loop {
        if let Ok(status) = service.wait_exit(Duration::from_millis(20)) {
            let log = service.log();
            let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().to_string();
            if log.contains(PASSWORD) {
                return Err(format!("billing printed the password:\n{log}"));
            }
            if !case.says.is_empty() && !last.contains(&case.says) {
                return Err(format!("billing's last line should say {:?}: {last:?} ({status})", case.says));
            }
            if case.wait_secs > 1 && started.elapsed() > Duration::from_secs(10) {
                return Err(format!("billing took {:?} to refuse; it should not wait", started.elapsed()));
            }
            return Ok((Verdict::Refused, last));
        }
        if http_request(service.addr(), "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200) {
            break;
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(format!("billing neither became ready nor exited:\n{}", service.log()));
        }
    }
    // /readyz and a point read use the shared read connection; a listing opens a pooled one.
    http_request(service.addr(), "GET", "/get/1", &[], b"")?;
    http_request(service.addr(), "GET", "/getall?limit=1", &[], b"")?;
    let ssl = case.server.psql(
        "postgres",
        &format!(
            "SELECT string_agg(DISTINCT s.ssl::text, ',') || ' ' || count(*) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.datname = '{db}' AND a.application_name = 'billing'"
        ),
    )?;
    match ssl.split_once(' ') {
        Some(("true", n)) if n.parse::<u32>().is_ok_and(|n| n >= 2) => Ok((Verdict::Tls, String::new())),
        Some(("false", n)) if n.parse::<u32>().is_ok_and(|n| n >= 2) => Ok((Verdict::Plain, String::new())),
        _ => Err(format!("billing's connections are not all alike, or fewer than two: {ssl:?}")),
    }
}

/// Runs the cases one after another and returns a line per case that went wrong.
fn run_cases(cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let db = unique_name("tls");
        let result = (|| -> Result<(), String> {
            case.server.psql("postgres", &format!("CREATE DATABASE \"{db}\" OWNER {}", case.user))?;
            let query = if case.query.is_empty() { String::new() } else { format!("?{}", case.query) };
            let url = format!("postgresql://{}:{PASSWORD}@127.0.0.1:{}/{db}{query}", case.user, case.server.port());
            let (psql, psql_said) = psql_verdict(case, &url)?;
            let (billing, billing_said) = billing_verdict(case, &url, &db)?;
            println!(
                "{:<58} billing {:<8} psql {:<8} {}",
                case.name,
                format!("{billing:?}"),
                format!("{psql:?}"),
                if billing_said.is_empty() { psql_said } else { billing_said }
            );
            let psql_expected = case.psql_differs.unwrap_or(case.expect);
            if billing != case.expect || psql != psql_expected {
                return Err(format!(
                    "expected billing {:?} and psql {psql_expected:?}, got billing {billing:?} and psql {psql:?}",
                    case.expect
                ));
            }
            Ok(())
        })();
        if let Err(e) = result {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    failures
}

fn psql_major(server: &PgServer) -> Result<u32, String> {
    let output = Command::new(server.psql_path()).arg("--version").output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split_whitespace()
        .find_map(|word| word.split('.').next()?.parse().ok())
        .ok_or_else(|| format!("cannot read psql's version from {text:?}"))
}

/// Every sslmode against a TLS server (right and wrong CA, default and explicit root certificate, settings from
/// the URL and from PGSSLMODE/PGSSLROOTCERT), a server whose certificate names another host, a server without TLS,
/// and servers that accept only TLS or only plain sessions for a role: billing's verdict is psql's, except where
/// billing deliberately refuses a root certificate file that does not exist.
#[test]
fn each_sslmode_connects_or_refuses_as_psql_does() -> Result<(), String> {
    let w = World::start()?;
    let (good, wrong) = (w.good_ca.display().to_string(), w.wrong_ca.display().to_string());
    let missing = w.scratch.path("missing.pem").display().to_string();
    let (tls, other, plain, home) = (&w.tls, &w.other_name, &w.plain, w.empty_home.as_path());
    use Verdict::{Plain, Refused, Tls};

    let tls_server = vec![
        Case::new("tls server, no sslmode (prefer)", tls, home, "", Tls),
        Case::new("tls server, disable", tls, home, "sslmode=disable", Plain),
        Case::new("tls server, allow", tls, home, "sslmode=allow", Plain),
        Case::new("tls server, prefer", tls, home, "sslmode=prefer", Tls),
        Case::new(
            "tls server, prefer + wrong CA (falls back to plain)",
            tls,
            home,
            format!("sslmode=prefer&sslrootcert={wrong}"),
            Plain,
        ),
        Case::new("tls server, require", tls, home, "sslmode=require", Tls),
        Case::new("tls server, require + right CA", tls, home, format!("sslmode=require&sslrootcert={good}"), Tls),
        Case::new("tls server, require + wrong CA", tls, home, format!("sslmode=require&sslrootcert={wrong}"), Refused)
            .says(
                "DATABASE_URL sslmode=require: the server certificate is not signed by the CA in DATABASE_URL \
                   sslrootcert=",
            ),
        Case::new("tls server, verify-ca without a root certificate", tls, home, "sslmode=verify-ca", Refused)
            .says("DATABASE_URL sslmode=verify-ca needs the CA certificate"),
        Case::new("tls server, verify-ca + right CA", tls, home, format!("sslmode=verify-ca&sslrootcert={good}"), Tls),
        Case::new(
            "tls server, verify-ca + wrong CA",
            tls,
            home,
            format!("sslmode=verify-ca&sslrootcert={wrong}"),
            Refused,
        )
        .says("DATABASE_URL sslmode=verify-ca: the server certificate is not signed by the CA in"),
        Case::new(
            "tls server, verify-full + right CA",
            tls,
            home,
            format!("sslmode=verify-full&sslrootcert={good}"),
            Tls,
        ),
        Case::new(
            "tls server, verify-full + wrong CA",
            tls,
            home,
            format!("sslmode=verify-full&sslrootcert={wrong}"),
            Refused,
        )
        .says(format!(
            "DATABASE_URL sslmode=verify-full: the server certificate is not signed by the CA in \
                           DATABASE_URL sslrootcert={wrong}"
        )),
        Case::new(
            "tls server, verify-full + missing root file",
            tls,
            home,
            format!("sslmode=verify-full&sslrootcert={missing}"),
            Refused,
        )
        .says(format!("DATABASE_URL sslrootcert={missing}: the file does not exist")),
        Case::new("tls server, PGSSLMODE=verify-full PGSSLROOTCERT=right", tls, home, "", Tls)
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", good.clone()),
        Case::new("tls server, URL disable beats PGSSLMODE=verify-full", tls, home, "sslmode=disable", Plain)
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", good.clone()),
        Case::new("tls server, require + PGSSLROOTCERT=wrong", tls, home, "sslmode=require", Refused)
            .env("PGSSLROOTCERT", wrong.clone())
            .says("DATABASE_URL sslmode=require: the server certificate is not signed by the CA in PGSSLROOTCERT="),
        Case::new("tls server, require + ~/.postgresql/root.crt wrong", tls, &w.wrong_home, "sslmode=require", Refused)
            .says("not signed by the CA in the default sslrootcert="),
        Case::new(
            "tls server, verify-full + ~/.postgresql/root.crt right",
            tls,
            &w.good_home,
            "sslmode=verify-full",
            Tls,
        ),
    ];
    let roles = vec![
        Case::new("hostssl-only role, allow (plain refused, then TLS)", tls, home, "sslmode=allow", Tls)
            .user("tls_user"),
        Case::new("hostssl-only role, disable", tls, home, "sslmode=disable", Refused)
            .user("tls_user")
            .retried()
            .says("pg_hba.conf rejects connection"),
        Case::new("hostnossl-only role, prefer (TLS refused, then plain)", tls, home, "sslmode=prefer", Plain)
            .user("plain_user"),
        Case::new("hostnossl-only role, require", tls, home, "sslmode=require", Refused)
            .user("plain_user")
            .retried()
            .says("pg_hba.conf rejects connection"),
    ];
    let other_name = vec![
        Case::new("cert for db.example.com, require", other, home, "sslmode=require", Tls),
        Case::new(
            "cert for db.example.com, verify-ca + right CA",
            other,
            home,
            format!("sslmode=verify-ca&sslrootcert={good}"),
            Tls,
        ),
        Case::new(
            "cert for db.example.com, verify-full + right CA",
            other,
            home,
            format!("sslmode=verify-full&sslrootcert={good}"),
            Refused,
        )
        .says("DATABASE_URL sslmode=verify-full: the server certificate is for db.example.com, not 127.0.0.1"),
        Case::new(
            "cert for db.example.com, verify-full + wrong CA",
            other,
            home,
            format!("sslmode=verify-full&sslrootcert={wrong}"),
            Refused,
        )
        .says("the server certificate is not signed by"),
    ];
    let plain_server = vec![
        Case::new("plain server, no sslmode (prefer)", plain, home, "", Plain),
        Case::new("plain server, disable", plain, home, "sslmode=disable", Plain),
        Case::new("plain server, allow", plain, home, "sslmode=allow", Plain),
        Case::new("plain server, prefer", plain, home, "sslmode=prefer", Plain),
        Case::new("plain server, require", plain, home, "sslmode=require", Refused)
            .says("DATABASE_URL sslmode=require: the server does not support TLS"),
        Case::new(
            "plain server, verify-ca + right CA",
            plain,
            home,
            format!("sslmode=verify-ca&sslrootcert={good}"),
            Refused,
        )
        .says("DATABASE_URL sslmode=verify-ca: the server does not support TLS"),
        Case::new(
            "plain server, verify-full + right CA",
            plain,
            home,
            format!("sslmode=verify-full&sslrootcert={good}"),
            Refused,
        )
        .says("DATABASE_URL sslmode=verify-full: the server does not support TLS"),
    ];
    // Where billing differs from libpq on purpose.
    let psql_16 = psql_major(tls)? >= 16;
    let differences = vec![
        // libpq silently skips a named root certificate file that does not exist unless the mode is verify-*.
        Case::new(
            "tls server, require + missing root file",
            tls,
            home,
            format!("sslmode=require&sslrootcert={missing}"),
            Refused,
        )
        .psql_differs(Tls)
        .says("the file does not exist"),
        Case::new(
            "tls server, prefer + missing root file",
            tls,
            home,
            format!("sslmode=prefer&sslrootcert={missing}"),
            Refused,
        )
        .psql_differs(Tls)
        .says("the file does not exist"),
        // OpenSSL takes a self-signed CA certificate as its own root; rustls (webpki) refuses a CA as a server.
        Case::new(
            "self-signed CA:TRUE server cert, verify-full + itself as root",
            &w.self_signed,
            home,
            format!("sslmode=verify-full&sslrootcert={}", w.self_signed_root.display()),
            Refused,
        )
        .psql_differs(Tls)
        .says("the server certificate is a CA certificate (basicConstraints CA:TRUE)"),
        Case::new("self-signed CA:TRUE server cert, require", &w.self_signed, home, "sslmode=require", Tls),
        // sslrootcert=system is PostgreSQL 16+ (psql 15 takes "system" for a file name); SSL_CERT_FILE stands in
        // for the system store of both clients.
        Case::new(
            "tls server, verify-full + sslrootcert=system (SSL_CERT_FILE=right CA)",
            tls,
            home,
            "sslmode=verify-full&sslrootcert=system",
            Tls,
        )
        .env("SSL_CERT_FILE", good.clone())
        .psql_differs(if psql_16 { Tls } else { Refused }),
        Case::new(
            "tls server, verify-full + sslrootcert=system (SSL_CERT_FILE=wrong CA)",
            tls,
            home,
            "sslmode=verify-full&sslrootcert=system",
            Refused,
        )
        .env("SSL_CERT_FILE", wrong.clone())
        .says("not signed by any CA the system trusts (DATABASE_URL sslrootcert=system)"),
        // Without a mode, system roots imply verify-full (16+); psql 15 prefers TLS and checks nothing.
        Case::new(
            "tls server, only sslrootcert=system (SSL_CERT_FILE=wrong CA)",
            tls,
            home,
            "sslrootcert=system",
            Refused,
        )
        .env("SSL_CERT_FILE", wrong.clone())
        .psql_differs(if psql_16 { Refused } else { Tls })
        .says("the default sslmode=verify-full: the server certificate is not signed by any CA the system trusts"),
    ];

    let groups = [tls_server, roles, other_name, plain_server, differences];
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = groups.iter().map(|group| scope.spawn(|| run_cases(group))).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|_| vec!["a case panicked".into()])).collect()
    });
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
    Ok(())
}

/// Over verify-full: a pooled write, a pipelined point read, and a write stuck behind a lock that billing cancels
/// with a cancel request (sent over TLS, since the connection's mode is require-or-better) all work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reads_and_cancel_requests_go_over_tls() -> TestResult {
    let scratch = Scratch::new()?;
    let ca = TestCa::new("billing test CA")?;
    let ca_path = scratch.path("ca.pem");
    ca.write_cert(&ca_path)?;
    let pg = PgServer::start_tls(
        PgOptions::default(),
        ServerTls {
            cert: ca.issue(&["127.0.0.1"])?,
            hba_first: vec!["hostnossl all payer 127.0.0.1/32 reject".into()],
        },
    )?;
    create_roles(&pg, &["payer"])?;
    let db = unique_name("tls");
    pg.psql("postgres", &format!("CREATE DATABASE \"{db}\" OWNER payer"))?;
    let url = format!(
        "postgresql://payer:{PASSWORD}@127.0.0.1:{}/{db}?sslmode=verify-full&sslrootcert={}",
        pg.port(),
        ca_path.display()
    );
    let mut service = ServiceProcess::spawn(
        BIN.as_ref(),
        &[("DATABASE_URL", &url), ("DATABASE_TIMEOUT_SECS", "1"), ("DATABASE_POOL_SIZE", "1")],
    )?;
    service.wait_ready(READY_TIMEOUT)?;
    let http = client()?;

    let r = http.post(service.url("/add?client_id=tls&amount=42")).send().await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.text().await?.trim_start_matches("Transaction added. transaction id=").to_string();
    let r = http.get(service.url(&format!("/get/{id}"))).send().await?;
    assert_eq!(r.status(), StatusCode::OK);
    let record: Value = r.json().await?;
    assert_eq!((record["client_id"].as_str(), record["amount"].as_i64()), (Some("tls"), Some(42)));
    let ssl = pg.psql(
        "postgres",
        &format!(
            "SELECT string_agg(s.ssl::text, ',') FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = '{db}' AND a.application_name = 'billing'"
        ),
    )?;
    assert_eq!(ssl, "true,true", "the pooled and the shared read connection should both use TLS");

    let mut locker = lock_transactions_in(&pg, &db, 4).await?;
    let started = Instant::now();
    let r = http.post(service.url("/add?client_id=stuck&amount=1")).send().await?;
    let took = started.elapsed();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await?;
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("was cancelled") && message.contains("safe to retry"), "{message}");
    assert!(took < Duration::from_secs(3), "the answer took {took:?}");
    assert!(!service.log().contains("could not send the cancel request"), "{}", service.log());
    let _ = locker.wait();
    assert_eq!(pg.psql(&db, "SELECT string_agg(client_id, ',' ORDER BY id) FROM transactions")?, "tls");
    assert!(!service.log().contains(PASSWORD), "the password reached the log");
    Ok(())
}
