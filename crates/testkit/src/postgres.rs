//! A real PostgreSQL server for tests, from the distribution's binaries
//! (`/usr/lib/postgresql/<version>/bin`, the newest there; `TESTKIT_PG_BIN` names another
//! directory). Each `Server` has its own temporary directory (owned by the `postgres` user
//! when the tests run as root: `initdb` refuses root), listens on 127.0.0.1 on a free port
//! with trust authentication for user `postgres`, and dies with the test process.
//!
//! ```no_run
//! let server = testkit::postgres::shared();
//! let url = server.create_database().unwrap(); // postgres://postgres@127.0.0.1:PORT/t_…
//! ```

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{free_port, is_root, process, random_hex, signal_group, spawn_tied_to_process};

/// How long a start may take before it is called failed.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The prefix of every server's directory in the temporary directory; the pid of the
/// process that made it follows, so directories of processes that died can be removed.
const DIR_PREFIX: &str = "testkit-pg.";

/// One PostgreSQL server (a postmaster and its backends).
pub struct Server {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    owner: Option<(libc::uid_t, libc::gid_t)>,
    child: Mutex<Option<Child>>,
}

/// One server per test process, started on first use. Tests each take their own database
/// from it (`create_database`). A test that kills or restarts a server starts its own.
///
/// Panics with the reason if PostgreSQL cannot be started: the tests that need it must
/// fail, not skip (`scripts/install-test-tools` installs it).
pub fn shared() -> &'static Server {
    static SHARED: OnceLock<Server> = OnceLock::new();
    SHARED.get_or_init(|| {
        Server::start().unwrap_or_else(|e| {
            panic!(
                "testkit: cannot start PostgreSQL for the tests: {e}\n\
                 (Debian's `postgresql` package provides it; scripts/install-test-tools installs it)"
            )
        })
    })
}

impl Server {
    /// Makes a new cluster in a temporary directory and starts it on a free port;
    /// returns once it accepts connections.
    pub fn start() -> io::Result<Server> {
        let bin = find_bin()?;
        let owner = if is_root() {
            Some(lookup_user("postgres")?)
        } else {
            None
        };
        // The directories of servers whose test process is gone (killed before it could
        // drop them, or holding the `shared` one, which is never dropped).
        process::remove_stale_dirs(DIR_PREFIX, |dir| {
            let _ = fs::remove_dir_all(dir);
        });
        let root = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}.{}",
            std::process::id(),
            random_hex(8)
        ));
        fs::create_dir(&root)?;
        let mut server = Server {
            root,
            bin,
            port: 0,
            owner,
            child: Mutex::new(None),
        };
        // From here on, Drop removes the directory if anything fails.
        if let Some((uid, gid)) = owner {
            chown(&server.root, uid, gid)?;
        }
        let initdb = server
            .as_owner(server.bin.join("initdb"))
            .arg("-D")
            .arg(server.data_dir())
            .args([
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .map_err(|e| with_context(e, "cannot run initdb"))?;
        check(&initdb, "initdb")?;

        let mut last_error = None;
        for _ in 0..5 {
            server.port = free_port()?;
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    // Someone took the port between our look and the server's bind: try
                    // another; anything else is reported.
                    let log = server.log_tail();
                    if !log.contains("could not bind") && !log.contains("Address already in use") {
                        return Err(e);
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("PostgreSQL did not start")))
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Makes a fresh, empty database `t_<random>` and returns its URL.
    pub fn create_database(&self) -> io::Result<String> {
        let name = format!("t_{}", random_hex(12));
        let out = self
            .client("createdb")
            .arg(&name)
            .output()
            .map_err(|e| with_context(e, "cannot run createdb"))?;
        check(&out, "createdb")?;
        Ok(self.url(&name))
    }

    /// Runs `sql` in database `db` with `psql` and returns what it printed (unaligned,
    /// tuples only: one row a line, columns separated by `|`).
    pub fn psql(&self, db: &str, sql: &str) -> io::Result<String> {
        let out = self
            .client("psql")
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .map_err(|e| with_context(e, "cannot run psql"))?;
        check(&out, "psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether the postmaster is running (not killed, not exited).
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        matches!(child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops the server at once, as a crash would: SIGKILL to the postmaster and every
    /// backend. Connections break; nothing is flushed. `restart` brings it back.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut child) = child.take() {
            signal_group(&child, libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again (killing it first if it runs) on the same port with the
    /// same data; returns once it accepts connections (after crash recovery).
    pub fn restart(&self) -> io::Result<()> {
        self.kill();
        let mut last_error = None;
        for _ in 0..10 {
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last_error = Some(e);
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("PostgreSQL did not restart")))
    }

    /// The server's log (its stderr), for a failing test to print.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// A command run as the cluster's owner, in its directory.
    fn as_owner(&self, program: PathBuf) -> Command {
        let mut command = Command::new(program);
        command.current_dir(&self.root).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid).env("HOME", &self.root);
        }
        command
    }

    /// A client program (`createdb`, `psql`) pointed at this server.
    fn client(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null());
        command
    }

    /// Starts the postmaster on `self.port` and waits until it accepts connections.
    fn launch(&self) -> io::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut command = self.as_owner(self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(&self.root)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child =
            spawn_tied_to_process(command).map_err(|e| with_context(e, "cannot run postgres"))?;
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);

        let started = Instant::now();
        loop {
            {
                let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(Ok(Some(status))) = child.as_mut().map(|c| c.try_wait()) {
                    child.take();
                    return Err(io::Error::other(format!(
                        "postgres exited ({status}) before accepting connections; its log:\n{}",
                        self.log_tail()
                    )));
                }
            }
            let ready = self
                .client("pg_isready")
                .args(["-d", "postgres", "-q", "-t", "2"])
                .status()
                .map_err(|e| with_context(e, "cannot run pg_isready"))?;
            if ready.success() {
                return Ok(());
            }
            if started.elapsed() > READY_WITHIN {
                self.kill();
                return Err(io::Error::other(format!(
                    "postgres did not accept connections within {READY_WITHIN:?}; its log:\n{}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or `TESTKIT_PG_BIN`.
fn find_bin() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("TESTKIT_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let base = Path::new("/usr/lib/postgresql");
    let newest = fs::read_dir(base)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    newest.map(|(_, bin)| bin).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin \
             (install Debian's `postgresql`, or set TESTKIT_PG_BIN)",
        )
    })
}

fn lookup_user(name: &str) -> io::Result<(libc::uid_t, libc::gid_t)> {
    let c_name = CString::new(name).map_err(io::Error::other)?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer points at memory owned here, of the size given.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no user `{name}`: initdb refuses to run as root, so the server runs as \
                 `{name}` (Debian's `postgresql` package makes that user)"
            ),
        ));
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}

fn chown(path: &Path, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::chown(c_path.as_ptr(), uid, gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn check(out: &Output, what: &str) -> io::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    )))
}

fn with_context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_makes_databases_survives_a_kill_and_cleans_up() {
        let server = Server::start().expect("PostgreSQL starts");
        let url = server.create_database().unwrap();
        let prefix = format!("postgres://postgres@127.0.0.1:{}/t_", server.port());
        assert!(url.starts_with(&prefix), "{url}");
        let db = url.rsplit('/').next().unwrap();
        assert_ne!(server.create_database().unwrap(), url);

        server
            .psql(db, "CREATE TABLE t (x int); INSERT INTO t VALUES (42);")
            .unwrap();
        server.kill();
        assert!(!server.is_running());
        assert!(server.psql(db, "SELECT 1").is_err(), "killed means gone");

        server.restart().unwrap();
        assert!(server.is_running());
        assert_eq!(server.psql(db, "SELECT x FROM t").unwrap().trim(), "42");

        let root = server.root.clone();
        assert!(root.exists());
        drop(server);
        assert!(!root.exists(), "the directory is removed");
    }

    #[test]
    fn the_shared_server_is_started_once() {
        let a = shared() as *const Server;
        let b = shared() as *const Server;
        assert_eq!(a, b);
        let url = shared().create_database().unwrap();
        assert!(url.contains("/t_"));
    }

    #[test]
    fn a_server_outlives_the_thread_that_started_it() {
        let server = std::thread::spawn(|| Server::start().unwrap())
            .join()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(server.is_running(), "{}", server.log());
        server.psql("postgres", "SELECT 1").unwrap();
    }
}
