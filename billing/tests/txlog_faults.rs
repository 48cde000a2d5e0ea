//! The transaction log's volume on a bad day, on real kernel objects: a volume that stops taking writes (a FIFO
//! whose reader stopped reading, so `write(2)` blocks as on a hung network disk) and a volume that fills up (a
//! 16 KiB tmpfs, mounted in a mount namespace of the service's own, so the host's mounts are never touched).

mod common;

use std::ffi::CString;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use billing_testkit::{ServiceProcess, shared, unique_name};
use common::{BIN, READY_TIMEOUT, TestResult, client, parse_log_line};
use reqwest::StatusCode;

fn temp_dir(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(unique_name(name));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

fn open_fifo(path: &Path, flags: libc::c_int) -> Result<File, String> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: a valid NUL-terminated path; the returned descriptor is owned by the File.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!("open {}: {}", path.display(), std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// A FIFO whose 4 KiB buffer is already full, with its read end held by the test: the service's next write to it
/// blocks until the test reads.
fn stalled_fifo(path: &Path) -> Result<File, String> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(format!("mkfifo: {}", std::io::Error::last_os_error()));
    }
    let reader = open_fifo(path, libc::O_RDONLY)?;
    let fd = reader.into_raw_fd();
    // SAFETY: fcntl on the descriptor we own; F_SETPIPE_SZ sets this pipe's buffer (rounded up to a page).
    let resized = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, 4096) };
    // SAFETY: fd is still ours.
    let reader = unsafe { File::from_raw_fd(fd) };
    if resized < 0 {
        return Err(format!("F_SETPIPE_SZ: {}", std::io::Error::last_os_error()));
    }
    let mut filler = open_fifo(path, libc::O_WRONLY)?;
    let junk = b"filler that keeps the pipe full\n";
    loop {
        match filler.write(junk) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => return Err(format!("filling the pipe: {e}")),
        }
    }
    Ok(reader)
}

/// Reads what the FIFO holds until `wanted` transaction lines have come out or 10 s have passed.
fn drain(reader: &mut File, wanted: usize) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
        let lines: Vec<String> =
            String::from_utf8_lossy(&text).lines().filter(|l| l.contains(": host ")).map(str::to_owned).collect();
        if lines.len() >= wanted || Instant::now() > deadline {
            return Ok(lines);
        }
    }
}

/// A hung log volume must not hold payments: each answers 201 (it is committed) within about
/// `LOG_WRITE_TIMEOUT_SECS`, and its line is written, whole, once the volume takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_log_volume_does_not_hold_committed_payments() -> TestResult {
    let dir = temp_dir("txlog-hung")?;
    let fifo = dir.join("app.log");
    let mut reader = stalled_fifo(&fifo)?;
    let db = unique_name("t");
    let url = shared().create_database(&db)?;
    let mut service = ServiceProcess::spawn(
        BIN.as_ref(),
        &[
            ("DATABASE_URL", &url),
            ("LOG_FILE", fifo.to_str().ok_or("path")?),
            ("LOG_WRITE_TIMEOUT_SECS", "1"),
            ("BILLING_HOSTNAME", "pod-h"),
        ],
    )?;
    service.wait_ready(READY_TIMEOUT)?;
    let http = client()?;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..5 {
        let r = http.post(service.url(&format!("/add?client_id=h{i}&amount={}", i + 1))).send();
        tasks.push(tokio::spawn(r));
    }
    for task in tasks {
        assert_eq!(task.await??.status(), StatusCode::CREATED);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "5 payments took {took:?} with the log volume hung");
    assert_eq!(shared().psql(&db, "SELECT count(*) FROM transactions")?, "5");
    let metrics = http.get(service.url("/metrics")).send().await?.text().await?;
    assert!(metrics.contains("billing_txlog_lines_queued 5"), "{metrics}");
    let log = service.log();
    assert!(log.contains("did not take a line within 1s"), "{log}");
    assert_eq!(log.matches("did not take a line").count(), 1, "one warning, not one per payment:\n{log}");

    // The volume comes back: every queued line is written, whole.
    let lines = drain(&mut reader, 5)?;
    assert_eq!(lines.len(), 5, "{lines:?}");
    let mut clients: Vec<String> =
        lines.iter().map(|l| parse_log_line(l).map(|p| p.client)).collect::<Result<_, _>>()?;
    clients.sort();
    assert_eq!(clients, ["h0", "h1", "h2", "h3", "h4"]);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// A log volume that fills up takes part of a line and then refuses the rest (ENOSPC): the file must still hold
/// only whole lines, and every payment still answers 201.
#[tokio::test]
async fn a_full_log_volume_keeps_only_whole_lines() -> TestResult {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("this test mounts a 16 KiB tmpfs in a mount namespace of its own: run it as root".into());
    }
    let dir = temp_dir("txlog-full")?;
    let volume = dir.join("volume");
    std::fs::create_dir_all(&volume)?;
    // The service runs in a mount namespace of its own with a tmpfs over `volume`: the mount lives and dies with it.
    let wrapper = dir.join("billing-on-a-small-volume.sh");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nexec unshare --mount --propagation private sh -c \
         'mount -t tmpfs -o size=16k billing-full-volume \"$VOLUME\" && exec \"$BILLING_BIN\"'\n",
    )?;
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let db = unique_name("t");
    let url = shared().create_database(&db)?;
    let log_file = volume.join("app.log");
    let mut service = ServiceProcess::spawn(
        &wrapper,
        &[
            ("DATABASE_URL", &url),
            ("LOG_FILE", log_file.to_str().ok_or("path")?),
            ("VOLUME", volume.to_str().ok_or("path")?),
            ("BILLING_BIN", BIN),
            ("BILLING_HOSTNAME", "pod-full"),
            ("RUST_LOG", "warn"),
        ],
    )?;
    service.wait_ready(READY_TIMEOUT)?;
    let pid = service.pid().ok_or("no pid")?;
    // The file as the service sees it, through its own mount namespace.
    let seen = PathBuf::from(format!("/proc/{pid}/root")).join(log_file.strip_prefix("/")?);
    let http = client()?;
    // About 60 bytes a line: 400 lines are 24 KB, well past the 16 KiB volume, with client ids of varying length
    // so that the line that no longer fits is cut at some point inside it.
    for i in 0..400 {
        let client_id = format!("c{i}-{}", "x".repeat(i % 17));
        let r = http.post(service.url(&format!("/add?client_id={client_id}&amount={}", i + 1))).send().await?;
        assert_eq!(r.status(), StatusCode::CREATED, "payment {i}");
    }
    assert_eq!(shared().psql(&db, "SELECT count(*) FROM transactions")?, "400");
    let text = std::fs::read_to_string(&seen).map_err(|e| format!("{}: {e}", seen.display()))?;
    assert!(!log_file.exists(), "the host's own directory was written to: the mount leaked");
    assert!(text.len() > 8_000, "the volume took only {} bytes", text.len());
    assert!(text.ends_with('\n'), "the file ends in a fragment: {:?}", &text[text.len().saturating_sub(80)..]);
    let lines: Vec<_> = text.lines().map(parse_log_line).collect::<Result<_, _>>()?;
    assert!(lines.len() < 400, "the volume never filled up");
    // Once the volume is full a shorter line may still fit where a longer one did not: the lines are some of the
    // payments, each whole and exactly as sent, in the order they were made.
    let mut last = None;
    for line in &lines {
        let i: usize = line
            .client
            .strip_prefix('c')
            .and_then(|c| c.split('-').next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("not a client id of this test: {line:?}"))?;
        assert_eq!(line.client, format!("c{i}-{}", "x".repeat(i % 17)), "{line:?}");
        assert_eq!(line.amount, i64::try_from(i + 1)?, "{line:?}");
        assert!(last < Some(i), "out of order: {line:?} after {last:?}");
        last = Some(i);
    }
    let metrics = http.get(service.url("/metrics")).send().await?.text().await?;
    let failed = 400 - lines.len();
    assert!(metrics.contains(&format!("billing_txlog_lines_failed_total {failed}")), "{failed} failed:\n{metrics}");
    drop(service);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
