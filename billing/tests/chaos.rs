//! The chaos test of issue 21 ("Proof on real parts"): exactly-once payments through real faults.
//!
//! Three billing processes share one PostgreSQL database. `CLIENTS` clients each send `PER_CLIENT` payments, each
//! with its own `Idempotency-Key` and its own `client_id`/`amount` pair, spread over the three processes, and retry
//! every answer but a 201 and every time-out or connection error with the same key, on the next process, until a
//! 201. Meanwhile a fault driver, in turn: SIGKILLs a billing process and starts another in its place (on a new port,
//! which the clients learn), crashes PostgreSQL (`SIGQUIT` to the postmaster, what `pg_ctl stop -m immediate` sends)
//! and restarts it on the same port and data directory, and terminates billing's backends
//! (`pg_terminate_backend`). The test passes when no key and no `client_id`/`amount` pair has two rows, every
//! acknowledged payment is in the ledger with the id it was acknowledged with, every payment ends acknowledged, no
//! answer is one a fault does not explain (only 201, 503 and transport errors are), a replay only follows an attempt
//! that may have recorded the payment, and the faults did something: each kill and crash was seen by some client as a
//! non-201 answer, and each termination ended at least one billing backend (billing may replace a dead idle
//! connection before any request notices, so that one need not be seen). The figures (payments, retries, replays,
//! answers by kind, each fault and the non-201 answers during it) go to stderr: `-- --nocapture` shows them.
//!
//! Faults must land on traffic, on a fast machine and on a loaded one alike, so the traffic is released in steps: a
//! client may send its payments up to an allowance, which the driver raises one step after each fault has been
//! recovered from; each fault fires once a fifth of its step is acknowledged, with the rest of the step still to
//! send. Every wait is on a condition (a process ready, PostgreSQL accepting, a count reached), with generous bounds.
//!
//! `without_keys_a_retry_may_pay_twice_but_nothing_acknowledged_is_lost` runs the same experiment without keys,
//! where a retry is a new payment: it prints how many were written twice, and holds billing to the rest.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use billing_testkit::{PgOptions, PgServer, ServiceProcess, StopMode};
use common::{BIN, TestResult};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::watch;

const PROCESSES: usize = 3;
const CLIENTS: usize = 20;
const PER_CLIENT: usize = 175;
/// Each round is one of each fault; the second round kills another billing process than the first.
const ROUNDS: usize = 2;
const FAULTS: usize = 3 * ROUNDS;
/// Payments per client released at each step: one step per fault and one after the last.
const STEP: usize = PER_CLIENT / (FAULTS + 1);

/// billing's own bound on a database call: a request is answered within about this (plus the cancel's grace).
const DATABASE_TIMEOUT_SECS: &str = "5";
/// A client gives up on one attempt after this and retries with the same key: well past billing's own bound, so
/// a time-out means a process that will not answer (killed, or stopped by the machine's load), not a slow one.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// The most one payment may take from its first attempt to its 201. A PostgreSQL crash's recovery and a billing
/// restart take seconds; this is minutes, for a 2-core machine shared with other builds.
const PAYMENT_BOUND: Duration = Duration::from_secs(180);
/// The whole experiment, traffic and faults. Generous for the same reason.
const EXPERIMENT_BOUND: Duration = Duration::from_secs(600);
/// A billing process started in place of a killed one, or the three after a PostgreSQL crash, become ready within
/// this (a debug build starting on a loaded machine, waiting for PostgreSQL's crash recovery).
const RECOVERY_BOUND: Duration = Duration::from_secs(120);
/// How long the driver waits for the clients to see a fault (it then moves on, and the test fails), or for the
/// acknowledged count to reach the next fault's threshold. Seconds on an idle machine.
const OBSERVE_BOUND: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payment_is_recorded_once_through_kills_crashes_and_terminated_backends() -> TestResult {
    let figures = experiment(true).await?;
    figures.print("with Idempotency-Key");
    let problems = figures.problems(true);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// The same experiment without keys, as a client that does not send them sees it: a retry is a new payment, so an
/// answer lost to a fault can become a second row (the figures print how many; 12 and 2 of 3,500 in two runs), but
/// no acknowledged payment may be missing, none may be in the ledger under another id, and every payment still
/// ends acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_a_retry_may_pay_twice_but_nothing_acknowledged_is_lost() -> TestResult {
    let figures = experiment(false).await?;
    figures.print("without Idempotency-Key");
    let problems = figures.problems(false);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// What one attempt at a payment was answered, as counted in the figures.
fn kind_of(status: StatusCode, body: &str) -> String {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let said = if body.contains("nothing was recorded") {
            "nothing recorded"
        } else if body.contains("may or may not") {
            "outcome unknown"
        } else {
            "other"
        };
        let error = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default();
        format!("503 {error} ({said})")
    } else {
        format!("{} {}", status.as_u16(), body.chars().take(300).collect::<String>())
    }
}

/// A connection that could not be made: the request was never sent.
const REFUSED: &str = "transport: connection refused or failed";

fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "transport: time-out"
    } else if e.is_connect() {
        REFUSED
    } else {
        "transport: connection broken mid-request"
    }
}

/// One payment's end: the id it was acknowledged with, and how it got there.
struct Acknowledged {
    key: String,
    client_id: String,
    amount: i64,
    id: i64,
    replayed: bool,
    attempts: usize,
}

#[derive(Default)]
struct ClientOutcome {
    acknowledged: Vec<Acknowledged>,
    /// Payments that had no 201 within `PAYMENT_BOUND`: (key, the last answers).
    unresolved: Vec<(String, Vec<String>)>,
    /// Answers that no fault explains: a 4xx, a 500, a 201 that names another payment, a replay when no earlier attempt
    /// may have recorded the payment.
    wrong: Vec<String>,
    answers: BTreeMap<String, usize>,
}

/// What the clients share with the driver.
struct Shared {
    /// The three processes' addresses; the driver replaces one when it starts a process in place of a killed one.
    addresses: RwLock<Vec<SocketAddr>>,
    acknowledged: AtomicUsize,
    /// Every answer but a 201, transport errors included.
    failures: AtomicUsize,
    /// Set when the clients are done, so that a driver waiting for traffic stops waiting.
    clients_done: AtomicBool,
}

async fn client_loop(
    c: usize,
    keyed: bool,
    run: String,
    http: reqwest::Client,
    shared: Arc<Shared>,
    mut allowance: watch::Receiver<usize>,
) -> ClientOutcome {
    let mut out = ClientOutcome::default();
    let client_id = format!("chaos-{c}");
    for i in 0..PER_CLIENT {
        if allowance.wait_for(|&allowed| i < allowed).await.is_err() {
            out.unresolved.push((format!("{run}-{c}-{i}"), vec!["the driver stopped releasing payments".into()]));
            return out;
        }
        let amount = i64::try_from(i + 1).unwrap_or(i64::MAX);
        let key = format!("{run}-{c}-{i}");
        let started = Instant::now();
        let mut attempts = 0;
        let mut last = Vec::new();
        // Whether an earlier attempt may have been recorded: anything but a refused connection (never sent) and a
        // 503 saying nothing was recorded. A replay after none such means one of those answers was false.
        let mut maybe_recorded = false;
        loop {
            // Spread over the processes; each retry goes to the next one.
            let process = (c + i + attempts) % PROCESSES;
            attempts += 1;
            let addr = shared.addresses.read().map(|a| a[process]).unwrap_or_else(|p| p.into_inner()[process]);
            let mut request = http
                .post(format!("http://{addr}/add?client_id={client_id}&amount={amount}"))
                .header("accept", "application/json");
            if keyed {
                request = request.header("Idempotency-Key", key.as_str());
            }
            let kind = match request.send().await {
                Ok(r) => {
                    let status = r.status();
                    let replayed = r.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
                    match r.text().await {
                        Ok(body) if status == StatusCode::CREATED => {
                            let stored: Value = serde_json::from_str(&body).unwrap_or_default();
                            let id = stored["id"].as_i64();
                            let same = stored["client_id"] == client_id.as_str() && stored["amount"] == amount;
                            match id {
                                Some(id) if same => {
                                    if replayed && !maybe_recorded {
                                        out.wrong.push(format!(
                                            "{key}: replayed after {} earlier attempts none of which may have \
                                             recorded it ({last:?}): {body}",
                                            attempts - 1
                                        ));
                                    }
                                    *out.answers
                                        .entry(if replayed { "201 replayed" } else { "201" }.into())
                                        .or_default() += 1;
                                    shared.acknowledged.fetch_add(1, Ordering::Relaxed);
                                    out.acknowledged.push(Acknowledged {
                                        key,
                                        client_id: client_id.clone(),
                                        amount,
                                        id,
                                        replayed,
                                        attempts,
                                    });
                                    break;
                                }
                                _ => {
                                    out.wrong
                                        .push(format!("{key}: a 201 for another payment or without an id: {body}"));
                                    "201 for another payment".to_string()
                                }
                            }
                        }
                        Ok(body) => {
                            let kind = kind_of(status, &body);
                            // A fault explains a 503 and nothing else: a 4xx, a 500 or a 422 for a key is a finding.
                            if status != StatusCode::SERVICE_UNAVAILABLE {
                                out.wrong.push(format!("{key} on {addr}: {kind}"));
                            }
                            kind
                        }
                        Err(e) => transport_kind(&e).to_string(),
                    }
                }
                Err(e) => transport_kind(&e).to_string(),
            };
            // Only a non-201 reaches here.
            shared.failures.fetch_add(1, Ordering::Relaxed);
            *out.answers.entry(kind.clone()).or_default() += 1;
            maybe_recorded |= !(kind == REFUSED || kind.ends_with("(nothing recorded)"));
            last.push(kind);
            if last.len() > 5 {
                last.remove(0);
            }
            if started.elapsed() > PAYMENT_BOUND {
                out.unresolved.push((key, last));
                break;
            }
            // A short backoff, growing with the attempts: 20 ms, 40 ms, ... up to 500 ms.
            let pause = Duration::from_millis(20 * u64::try_from(attempts.min(25)).unwrap_or(25));
            tokio::time::sleep(pause).await;
        }
    }
    out
}

/// What one fault did.
struct FaultReport {
    what: String,
    /// Non-201 answers the clients had from the fault until the system was ready again.
    failures: usize,
    took: Duration,
}

/// The driver's state, on its own thread: it blocks on processes and psql.
struct Driver {
    pg: Arc<PgServer>,
    url: String,
    services: Vec<ServiceProcess>,
    /// Killed processes, kept until the end so that their logs can be read.
    killed: Vec<ServiceProcess>,
    shared: Arc<Shared>,
    allowance: watch::Sender<usize>,
}

impl Driver {
    fn run(mut self) -> Result<(Vec<FaultReport>, Vec<ServiceProcess>), String> {
        let mut reports = Vec::new();
        for fault in 0..FAULTS {
            // Released: (fault + 1) steps. Fire once a fifth of this step is acknowledged: traffic is flowing, and
            // four fifths of the step (CLIENTS * STEP * 4/5 payments) are still to send.
            let threshold = CLIENTS * (fault * STEP + STEP / 5);
            self.wait_for("traffic to reach the fault", || {
                self.shared.acknowledged.load(Ordering::Relaxed) >= threshold
            })?;
            let before = self.shared.failures.load(Ordering::Relaxed);
            let started = Instant::now();
            let what = match fault % 3 {
                0 => self.kill_a_billing_process(fault / 3)?,
                1 => self.crash_postgres()?,
                _ => self.terminate_billing_backends()?,
            };
            self.wait_until_all_ready()?;
            reports.push(FaultReport {
                what,
                failures: self.shared.failures.load(Ordering::Relaxed) - before,
                took: started.elapsed(),
            });
            self.allowance.send_replace((fault + 2) * STEP);
        }
        self.allowance.send_replace(PER_CLIENT);
        self.killed.extend(self.services);
        Ok((reports, self.killed))
    }

    /// Polls `done` every 10 ms, up to `OBSERVE_BOUND`; gives up at once if the clients are done.
    fn wait_for(&self, what: &str, done: impl Fn() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + OBSERVE_BOUND;
        while !done() {
            if self.shared.clients_done.load(Ordering::Relaxed) {
                return Err(format!("the clients finished while the driver waited for {what}"));
            }
            if Instant::now() > deadline {
                return Err(format!("waited {OBSERVE_BOUND:?} for {what}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Waits until some client had a non-201 answer since `before`: the fault was seen, not just done. Failing to
    /// see it is not an error here; the figures say so and the test fails on them.
    fn wait_to_be_seen(&self, before: usize) -> bool {
        self.wait_for("a client to see the fault", || self.shared.failures.load(Ordering::Relaxed) > before).is_ok()
    }

    fn kill_a_billing_process(&mut self, which: usize) -> Result<String, String> {
        let which = which % PROCESSES;
        let before = self.shared.failures.load(Ordering::Relaxed);
        let old = &mut self.services[which];
        let old_addr = old.addr();
        old.signal(libc::SIGKILL)?;
        let status = old.wait_exit(Duration::from_secs(30))?;
        use std::os::unix::process::ExitStatusExt;
        if status.signal() != Some(libc::SIGKILL) {
            return Err(format!("billing {which} ended with {status}, not by SIGKILL"));
        }
        // Clients keep sending to the dead address (connection refused) until the new one is known.
        let seen = self.wait_to_be_seen(before);
        let mut new = spawn_billing(&self.url)?;
        new.wait_ready(RECOVERY_BOUND)?;
        let new_addr = new.addr();
        self.shared.addresses.write().map_err(|_| "the address table was poisoned")?[which] = new_addr;
        self.killed.push(std::mem::replace(&mut self.services[which], new));
        Ok(format!(
            "SIGKILL billing {which} ({old_addr}), started again on {new_addr}{}",
            if seen { "" } else { " [not seen by any client]" }
        ))
    }

    fn crash_postgres(&mut self) -> Result<String, String> {
        let before = self.shared.failures.load(Ordering::Relaxed);
        self.pg.stop(StopMode::Immediate)?;
        // Down until a client has seen it, so that the crash is a fault the clients lived through.
        let seen = self.wait_to_be_seen(before);
        // Same port, same data directory; returns once PostgreSQL accepts connections (after its crash recovery).
        self.pg.restart()?;
        Ok(format!(
            "PostgreSQL crashed (immediate stop) and restarted on port {}{}",
            self.pg.port(),
            if seen { "" } else { " [not seen by any client]" }
        ))
    }

    fn terminate_billing_backends(&mut self) -> Result<String, String> {
        let terminated = self.pg.psql(
            "postgres",
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'billing'",
        )?;
        let count: usize = terminated.parse().map_err(|e| format!("terminated {terminated:?}: {e}"))?;
        if count == 0 {
            return Err("pg_terminate_backend found no billing backend to terminate".into());
        }
        Ok(format!("terminated {count} billing backends"))
    }

    /// Each process answers `/readyz` 200 (it reaches the database again), within `RECOVERY_BOUND`.
    fn wait_until_all_ready(&mut self) -> Result<(), String> {
        for service in &mut self.services {
            service.wait_ready(RECOVERY_BOUND)?;
        }
        Ok(())
    }
}

fn spawn_billing(url: &str) -> Result<ServiceProcess, String> {
    ServiceProcess::spawn(
        BIN.as_ref(),
        &[("DATABASE_URL", url), ("DATABASE_TIMEOUT_SECS", DATABASE_TIMEOUT_SECS), ("RUST_LOG", "warn")],
    )
}

struct Figures {
    payments: usize,
    acknowledged: usize,
    replayed: usize,
    /// Attempts beyond each payment's first.
    retries: usize,
    rows: usize,
    answers: BTreeMap<String, usize>,
    faults: Vec<FaultReport>,
    took: Duration,
    /// The ledger's rows by key (with keys) or by pair, written more than once.
    duplicate_keys: Vec<String>,
    duplicate_pairs: Vec<String>,
    /// Acknowledged, but not in the ledger with that id, pair and key.
    missing: Vec<String>,
    /// In the ledger without ever being acknowledged (only the unkeyed run can have such a row).
    unacknowledged_rows: usize,
    unresolved: Vec<(String, Vec<String>)>,
    wrong: Vec<String>,
    panics: Vec<String>,
}

impl Figures {
    fn print(&self, title: &str) {
        eprintln!("chaos, {title}: {:.1?} in all", self.took);
        eprintln!(
            "  payments {}, acknowledged {}, of which replayed {}; retries {}; ledger rows {}",
            self.payments, self.acknowledged, self.replayed, self.retries, self.rows
        );
        eprintln!(
            "  written twice: {} keys, {} client_id/amount pairs; acknowledged but missing {}; rows never acknowledged {}; unresolved {}",
            self.duplicate_keys.len(),
            self.duplicate_pairs.len(),
            self.missing.len(),
            self.unacknowledged_rows,
            self.unresolved.len()
        );
        eprintln!("  answers by kind:");
        for (kind, n) in &self.answers {
            eprintln!("    {n:>6}  {kind}");
        }
        eprintln!("  faults:");
        for f in &self.faults {
            eprintln!("    {} ({:.1?}): {} non-201 answers meanwhile", f.what, f.took, f.failures);
        }
    }

    fn problems(&self, keyed: bool) -> Vec<String> {
        let mut problems = Vec::new();
        let mut some = |what: &str, list: &[String]| {
            if !list.is_empty() {
                problems.push(format!("{} {what}, e.g. {:?}", list.len(), &list[..list.len().min(5)]));
            }
        };
        if keyed {
            some("keys with more than one row", &self.duplicate_keys);
            some("client_id/amount pairs with more than one row", &self.duplicate_pairs);
        }
        some("acknowledged payments not in the ledger as acknowledged", &self.missing);
        some("answers no fault explains", &self.wrong);
        some("billing processes that panicked", &self.panics);
        let unresolved: Vec<String> = self.unresolved.iter().map(|(k, last)| format!("{k}: {last:?}")).collect();
        some("payments never acknowledged", &unresolved);
        if keyed && self.unacknowledged_rows != 0 {
            problems.push(format!("{} ledger rows no client was acknowledged", self.unacknowledged_rows));
        }
        if self.acknowledged != self.payments {
            problems.push(format!("{} of {} payments acknowledged", self.acknowledged, self.payments));
        }
        // The faults must have done something: the clients saw non-201 answers through each kill and crash.
        let failures: usize = self.answers.iter().filter(|(k, _)| !k.starts_with("201")).map(|(_, n)| n).sum();
        if failures + self.replayed == 0 {
            problems.push("no request failed and none was replayed: the faults did nothing".into());
        }
        for f in &self.faults {
            if f.what.contains("[not seen") {
                problems.push(format!("a fault no client saw: {}", f.what));
            }
        }
        if self.faults.len() != FAULTS {
            problems.push(format!("{} of {FAULTS} faults happened", self.faults.len()));
        }
        problems
    }
}

async fn experiment(keyed: bool) -> Result<Figures, Box<dyn std::error::Error>> {
    let started = Instant::now();
    // durable: a crash must not lose what a 201 promised, so commits are flushed as in production.
    let pg = Arc::new(PgServer::start(PgOptions { durable: true, lc_messages: None })?);
    let url = pg.create_database("billing")?;
    let mut services = (0..PROCESSES).map(|_| spawn_billing(&url)).collect::<Result<Vec<_>, _>>()?;
    for s in &mut services {
        s.wait_ready(RECOVERY_BOUND)?;
    }
    let shared = Arc::new(Shared {
        addresses: RwLock::new(services.iter().map(ServiceProcess::addr).collect()),
        acknowledged: AtomicUsize::new(0),
        failures: AtomicUsize::new(0),
        clients_done: AtomicBool::new(false),
    });
    let (allowance, allowed) = watch::channel(STEP);
    let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).connect_timeout(Duration::from_secs(5)).build()?;
    let run = format!("{}", std::process::id());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client_loop(c, keyed, run.clone(), http.clone(), Arc::clone(&shared), allowed.clone())))
        .collect();
    drop(allowed);
    let driver =
        Driver { pg: Arc::clone(&pg), url, services, killed: Vec::new(), shared: Arc::clone(&shared), allowance };
    let driver = tokio::task::spawn_blocking(move || driver.run());

    let mut outcomes = Vec::new();
    let all_clients = async {
        for client in clients {
            outcomes.push(client.await?);
        }
        Ok::<_, tokio::task::JoinError>(())
    };
    let finished = tokio::time::timeout(EXPERIMENT_BOUND, all_clients).await;
    shared.clients_done.store(true, Ordering::Relaxed);
    // The driver's own waits are bounded, so it ends; its error (a process that would not start) is the test's.
    let (faults, processes) = driver.await??;
    finished.map_err(|_| format!("the clients were not done within {EXPERIMENT_BOUND:?}"))??;

    let mut figures = Figures {
        payments: CLIENTS * PER_CLIENT,
        acknowledged: 0,
        replayed: 0,
        retries: 0,
        rows: 0,
        answers: BTreeMap::new(),
        faults,
        took: Duration::ZERO,
        duplicate_keys: Vec::new(),
        duplicate_pairs: Vec::new(),
        missing: Vec::new(),
        unacknowledged_rows: 0,
        unresolved: Vec::new(),
        wrong: Vec::new(),
        panics: Vec::new(),
    };
    let mut acknowledged = Vec::new();
    for out in outcomes {
        for (kind, n) in out.answers {
            *figures.answers.entry(kind).or_default() += n;
        }
        figures.unresolved.extend(out.unresolved);
        figures.wrong.extend(out.wrong);
        acknowledged.extend(out.acknowledged);
    }
    figures.acknowledged = acknowledged.len();
    figures.replayed = acknowledged.iter().filter(|a| a.replayed).count();
    figures.retries = acknowledged.iter().map(|a| a.attempts - 1).sum();

    // The ledger, read straight from PostgreSQL.
    let listing =
        pg.psql("billing", "SELECT id, coalesce(idempotency_key, ''), client_id, amount FROM transactions")?;
    let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
    let mut by_pair: HashMap<(String, i64), Vec<i64>> = HashMap::new();
    let mut by_id: HashMap<i64, (String, String, i64)> = HashMap::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split('|').collect();
        let [id, key, client_id, amount] = fields[..] else {
            return Err(format!("not a ledger row: {line:?}").into());
        };
        let (id, amount): (i64, i64) = (id.parse()?, amount.parse()?);
        if !key.is_empty() {
            by_key.entry(key.to_string()).or_default().push(id);
        }
        by_pair.entry((client_id.to_string(), amount)).or_default().push(id);
        by_id.insert(id, (key.to_string(), client_id.to_string(), amount));
    }
    figures.rows = by_id.len();
    figures.duplicate_keys =
        by_key.iter().filter(|(_, ids)| ids.len() > 1).map(|(k, ids)| format!("{k}: {ids:?}")).collect();
    figures.duplicate_pairs =
        by_pair.iter().filter(|(_, ids)| ids.len() > 1).map(|((c, a), ids)| format!("{c}/{a}: {ids:?}")).collect();
    let want_key = |a: &Acknowledged| if keyed { a.key.clone() } else { String::new() };
    figures.missing = acknowledged
        .iter()
        .filter(|a| by_id.get(&a.id) != Some(&(want_key(a), a.client_id.clone(), a.amount)))
        .map(|a| {
            format!(
                "{} acknowledged as id {} after {} attempts, stored: {:?}",
                a.key,
                a.id,
                a.attempts,
                by_id.get(&a.id)
            )
        })
        .collect();
    let acknowledged_ids: std::collections::HashSet<i64> = acknowledged.iter().map(|a| a.id).collect();
    figures.unacknowledged_rows = by_id.keys().filter(|id| !acknowledged_ids.contains(id)).count();
    figures.panics = processes
        .iter()
        .map(ServiceProcess::log)
        .filter(|log| log.contains("panicked"))
        .map(|log| log.lines().filter(|l| l.contains("panicked")).take(3).collect::<Vec<_>>().join("\n"))
        .collect();
    figures.took = started.elapsed();
    drop(processes);
    Ok(figures)
}
