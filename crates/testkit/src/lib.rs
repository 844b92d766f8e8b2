//! What testdrive's tests start on one machine beside the service: a real PostgreSQL
//! server in a temporary directory (`postgres`) and a second Docker Engine with its own
//! socket, data root and bridge (`engine`). Each stops and removes what it made when
//! dropped, and dies with the test process if that is killed.

pub mod engine;
pub mod postgres;
mod process;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it; it may be taken
/// again before the caller binds it, which is rare enough for tests).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `len` lowercase hex digits, different on every call (not for secrets).
pub fn random_hex(len: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u32(std::process::id());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        hasher.write_u128(nanos);
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out.truncate(len);
    out
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` so that the child is sent SIGKILL when the test process ends, however
/// it ends, and is put in a process group of its own (so `kill_group` reaches what it
/// forks too).
///
/// Linux sends the parent-death signal when the *thread* that forked the child ends, not
/// the process: a child spawned from a test's thread would be killed when that test
/// returns. So every such child is forked by one keeper thread that lives as long as the
/// process.
pub fn spawn_tied_to_process(mut command: Command) -> io::Result<Child> {
    static KEEPER: Mutex<Option<mpsc::Sender<SpawnRequest>>> = Mutex::new(None);
    // SAFETY: only async-signal-safe calls (prctl, getppid, setpgid, raise) between fork
    // and exec.
    unsafe {
        let parent = libc::getpid();
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have ended between fork and prctl.
            if libc::getppid() != parent {
                libc::raise(libc::SIGKILL);
            }
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let sender = {
        let mut keeper = KEEPER.lock().unwrap_or_else(|e| e.into_inner());
        keeper
            .get_or_insert_with(|| {
                let (tx, rx) = mpsc::channel::<SpawnRequest>();
                std::thread::Builder::new()
                    .name("testkit-spawner".into())
                    .spawn(move || {
                        for (mut command, reply) in rx {
                            let _ = reply.send(command.spawn());
                        }
                    })
                    .expect("testkit: cannot start the thread that spawns servers");
                tx
            })
            .clone()
    };
    let (reply, answer) = mpsc::channel();
    sender
        .send((command, reply))
        .map_err(|_| io::Error::other("testkit: the spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("testkit: the spawner thread is gone"))?
}

/// Sends `signal` to the process group led by `child` (see `spawn_tied_to_process`).
pub fn signal_group(child: &Child, signal: libc::c_int) {
    // SAFETY: plain kill(2) on a process group this process made.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), signal);
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}
