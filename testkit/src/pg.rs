use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, postgres, psql) were not found. Install them with \
`sudo apt-get install -y postgresql` (Debian/Ubuntu; they land in /usr/lib/postgresql/<version>/bin), or point \
PG_BIN at the directory that holds them. The tests never skip for lack of a database.";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PgOptions {
    /// `fsync` on, as in production. Off by default: the OS keeps the data unless the machine itself crashes,
    /// which is all a test needs, and it makes the suite several times faster.
    pub durable: bool,
    /// The server's `lc_messages`, e.g. `ru_RU.UTF-8`: its error messages are then in that language. The locale is
    /// compiled with `localedef` into a directory of the harness's own (`LOCPATH`), so the machine's locales are
    /// left as they are.
    pub lc_messages: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// SIGINT: disconnect clients, checkpoint, exit.
    Fast,
    /// SIGQUIT: exit at once, as in a crash; recovery replays the WAL at next start.
    Immediate,
}

/// `ssl = on` for a server: its certificate, and pg_hba.conf lines placed before the defaults (for example
/// `hostssl all tls_only 127.0.0.1/32 scram-sha-256`, or `hostnossl ...`), which PostgreSQL reads first.
#[derive(Clone)]
pub struct ServerTls {
    pub cert: crate::ServerCert,
    pub hba_first: Vec<String>,
}

/// One PostgreSQL server. Dropping it stops the server and deletes its files.
pub struct PgServer {
    bin_dir: PathBuf,
    root: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    options: PgOptions,
    tls: Option<ServerTls>,
    child: Mutex<Option<Child>>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test in this run has: `prefix_<pid>_<n>`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn find_bin_dir() -> Result<PathBuf, String> {
    let has_all = |dir: &Path| ["initdb", "postgres", "psql"].iter().all(|b| dir.join(b).is_file());
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_all(&dir) {
            Ok(dir)
        } else {
            Err(format!("PG_BIN={} does not contain initdb, postgres and psql. {INSTALL_HINT}", dir.display()))
        };
    }
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_all(&bin).then_some((version, bin))
        })
        .collect();
    versioned.sort();
    if let Some((_, bin)) = versioned.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| has_all(dir))
        .ok_or_else(|| INSTALL_HINT.to_string())
}

/// initdb refuses to run as root; when we are root, the server runs as the `postgres` account (made by the
/// Debian package) or, failing that, `nobody`.
fn unprivileged_user() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        let cname = CString::new(name).map_err(|e| e.to_string())?;
        // SAFETY: getpwnam takes a NUL-terminated string and returns a pointer into static storage or null;
        // the fields are copied out before any other call could overwrite it.
        let entry = unsafe { libc::getpwnam(cname.as_ptr()) };
        if !entry.is_null() {
            // SAFETY: checked non-null above.
            let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
            return Ok(Some((uid, gid)));
        }
    }
    Err("running as root, and there is neither a `postgres` nor a `nobody` account to run PostgreSQL as".into())
}

fn chown(path: &Path, owner: Option<(u32, u32)>) -> Result<(), String> {
    match owner {
        Some((uid, gid)) => {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", path.display()))
        }
        None => Ok(()),
    }
}

impl PgServer {
    pub fn start(options: PgOptions) -> Result<Self, String> {
        Self::start_with(options, None)
    }

    /// A server with `ssl = on`, presenting `tls.cert`; plain connections are accepted too unless `tls.hba_first`
    /// says otherwise.
    pub fn start_tls(options: PgOptions, tls: ServerTls) -> Result<Self, String> {
        Self::start_with(options, Some(tls))
    }

    fn start_with(options: PgOptions, tls: Option<ServerTls>) -> Result<Self, String> {
        let bin_dir = find_bin_dir()?;
        let run_as = unprivileged_user()?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let root = std::env::temp_dir().join(format!("{}_{nanos}", unique_name("billing-pg")));
        fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
        chown(&root, run_as)?;

        let mut server = PgServer { bin_dir, root, port: 0, run_as, options, tls, child: Mutex::new(None) };
        server.initdb()?;
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = crate::free_port()?;
            match server.launch() {
                Ok(()) => return Ok(server),
                // Another process may take the port between our probe and postgres's bind: try another.
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.env_remove("PGDATA").current_dir(&self.root);
        cmd
    }

    fn initdb(&self) -> Result<(), String> {
        let output = self
            .command("initdb")
            .args(["-D"])
            .arg(self.data_dir())
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--auth=trust", "--no-sync"])
            .output()
            .map_err(|e| format!("cannot run initdb: {e}. {INSTALL_HINT}"))?;
        if !output.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&output.stderr)));
        }
        // Superuser `postgres` without a password for the harness; every other role must use its password, so
        // the service's password handling is exercised for real.
        let mut hba = String::new();
        if let Some(tls) = &self.tls {
            self.write_private(&self.data_dir().join("server.crt"), &tls.cert.cert_pem)?;
            self.write_private(&self.data_dir().join("server.key"), &tls.cert.key_pem)?;
            for line in &tls.hba_first {
                hba.push_str(line);
                hba.push('\n');
            }
        }
        hba.push_str(
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        );
        fs::write(self.data_dir().join("pg_hba.conf"), hba).map_err(|e| format!("write pg_hba.conf: {e}"))
    }

    /// A file only the server's user may read, as PostgreSQL demands of its private key.
    fn write_private(&self, path: &Path, contents: &str) -> Result<(), String> {
        fs::write(path, contents).map_err(|e| format!("write {}: {e}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod {}: {e}", path.display()))?;
        chown(path, self.run_as)
    }

    fn launch(&self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("open server log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let port = self.port.to_string();
        let socket_dir = self.root.display().to_string();
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-p", &port, "-k", &socket_dir, "-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "max_connections=300", "-c", "shared_buffers=32MB"]);
        if !self.options.durable {
            cmd.args(["-c", "fsync=off", "-c", "full_page_writes=off"]);
        }
        if let Some(locale) = self.options.lc_messages {
            cmd.env("LOCPATH", crate::locale::compiled(locale)?);
            cmd.args(["-c", &format!("lc_messages={locale}")]);
        }
        if self.tls.is_some() {
            // Relative paths are read from the data directory.
            cmd.args(["-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key"]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot start postgres: {e}"))?;

        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("postgres exited with {status} while starting:\n{}", self.log_tail()));
            }
            if self.psql("postgres", "SELECT 1").is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("postgres did not accept connections within 60s:\n{}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        *self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(child);
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The psql of the same installation, for tests that run it with URLs and settings of their own.
    pub fn psql_path(&self) -> PathBuf {
        self.bin_dir.join("psql")
    }

    /// Connection URL for `database` as the superuser (trusted on loopback).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a fresh database and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    /// psql as the superuser over TCP, running `sql` in `database` and stopping at the first error.
    fn psql_command(&self, database: &str, sql: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("psql"));
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs SQL with psql and returns its unaligned, tuples-only output, trimmed.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let output = self
            .psql_command(database, sql)
            .args(["-A", "-t"])
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
        }
    }

    /// Starts a long-running psql session that runs `sql` (for holding locks while a test acts).
    pub fn psql_background(&self, database: &str, sql: &str) -> Result<Child, String> {
        self.psql_command(database, sql).stdout(Stdio::null()).spawn().map_err(|e| format!("cannot run psql: {e}"))
    }

    pub fn is_running(&self) -> bool {
        self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }

    /// Stops the server and waits for it to exit; the data directory stays for [`PgServer::restart`].
    pub fn stop(&self, mode: StopMode) -> Result<(), String> {
        let Some(mut child) = self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() else {
            return Ok(());
        };
        let signal = match mode {
            StopMode::Fast => libc::SIGINT,
            StopMode::Immediate => libc::SIGQUIT,
        };
        let pid = libc::pid_t::try_from(child.id()).map_err(|e| e.to_string())?;
        // SAFETY: kill with a pid we spawned and still own (not yet reaped).
        unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("postgres did not stop within 30s after signal {signal}; killed"))
    }

    /// Starts the server again on the same data directory and port.
    pub fn restart(&self) -> Result<(), String> {
        if self.is_running() {
            return Err("the server is already running".into());
        }
        self.launch()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.stop(StopMode::Immediate);
        let _ = fs::remove_dir_all(&self.root);
    }
}

static SHARED: OnceLock<PgServer> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(server) = SHARED.get() {
        let _ = server.stop(StopMode::Immediate);
        let _ = fs::remove_dir_all(&server.root);
    }
}

/// One server for the whole test binary, started on first use and stopped when the process exits; tests each
/// create their own database on it. Panics (failing the test loudly) if PostgreSQL cannot be started.
pub fn shared() -> &'static PgServer {
    SHARED.get_or_init(|| {
        let server = PgServer::start(PgOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        // Statics are never dropped; atexit is how the server goes away with the test binary.
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe { libc::atexit(stop_shared) };
        server
    })
}
