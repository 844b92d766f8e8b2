//! The host's neighbour table (its ARP cache) must hold an entry for every sandbox the host
//! talks to on the sandbox bridge. Its limits are the kernel's, for the whole host:
//! `net.ipv4.neigh.default.gc_thresh1` (below it nothing is collected), `gc_thresh2` (the
//! soft limit: above it, entries unused for 5 s are dropped) and `gc_thresh3` (the hard
//! limit: no entry past it). The usual defaults, 128/512/1024, leave sandboxes unreachable
//! past about 500 on one bridge. At start testdrive compares them with what this
//! deployment needs, raises them when it may (only ever up), and otherwise says exactly
//! what to set. It never refuses to start over them.
//!
//! What needs an entry: a container with an interface on the bridge, that is a running
//! place (`max_sandboxes`: provisioning and ready sandboxes, warm pool members among them).
//! A sleeping sandbox keeps its address but its container is stopped: no interface, and the
//! entry it had goes stale, the first the kernel drops. The need is twice the running
//! places plus 256, for the other hosts on the box and other deployments sharing the table.

use std::io;
use std::path::Path;

/// Where the kernel keeps the defaults every interface's table follows.
pub const KERNEL_SETTINGS: &str = "/proc/sys/net/ipv4/neigh/default";

/// Entries reserved besides this deployment's, for everything else on the host.
const MARGIN: u64 = 256;
/// The most entries asked for, whatever `max_sandboxes` says: twice what a /16 of
/// sandboxes needs. Raised values are at most four times this (`gc_thresh3`).
const MOST_ENTRIES: u64 = 1 << 18;

/// The three limits, in the kernel's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub gc_thresh1: u64,
    pub gc_thresh2: u64,
    pub gc_thresh3: u64,
}

impl Limits {
    /// The sandboxes a table with these limits serves (what its soft limit holds besides
    /// the margin).
    pub fn sandboxes(&self) -> u64 {
        (self.gc_thresh2.min(self.gc_thresh3).saturating_sub(MARGIN)) / 2
    }

    /// The command that sets these limits now.
    pub fn sysctl_command(&self) -> String {
        format!(
            "sysctl -w net.ipv4.neigh.default.gc_thresh1={} \
             net.ipv4.neigh.default.gc_thresh2={} net.ipv4.neigh.default.gc_thresh3={}",
            self.gc_thresh1, self.gc_thresh2, self.gc_thresh3
        )
    }

    /// The same, kept across reboots.
    pub fn sysctl_file(&self) -> String {
        format!(
            "printf 'net.ipv4.neigh.default.gc_thresh1 = {}\\n\
             net.ipv4.neigh.default.gc_thresh2 = {}\\n\
             net.ipv4.neigh.default.gc_thresh3 = {}\\n' > /etc/sysctl.d/60-testdrive.conf",
            self.gc_thresh1, self.gc_thresh2, self.gc_thresh3
        )
    }

    fn show(&self) -> String {
        format!(
            "{}/{}/{}",
            self.gc_thresh1, self.gc_thresh2, self.gc_thresh3
        )
    }
}

/// Neighbour entries `sandboxes` running places need: twice as many, plus the margin.
pub fn entries_needed(sandboxes: u32) -> u64 {
    (u64::from(sandboxes) * 2 + MARGIN).min(MOST_ENTRIES)
}

/// What to do about the table, given its limits now and the running places.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The soft and the hard limit both hold every entry needed.
    Enough,
    /// Raise to these (none lower than now; thresh1 < thresh2 < thresh3).
    Raise(Limits),
}

/// Enough when the soft limit holds every entry needed (past it the kernel starts dropping
/// entries of live sandboxes). When raising, room to spare: every needed entry fits under
/// `gc_thresh1` (rounded up to a power of two), the soft limit twice that, the hard limit
/// four times — for 1000 sandboxes, 4096/8192/16384.
pub fn decide(now: Limits, sandboxes: u32) -> Decision {
    let needed = entries_needed(sandboxes);
    if now.gc_thresh2 >= needed && now.gc_thresh3 >= needed {
        return Decision::Enough;
    }
    let wanted = wanted(needed);
    let gc_thresh1 = now.gc_thresh1.max(wanted.gc_thresh1);
    let gc_thresh2 = now.gc_thresh2.max(wanted.gc_thresh2).max(gc_thresh1 + 1);
    let gc_thresh3 = now.gc_thresh3.max(wanted.gc_thresh3).max(gc_thresh2 + 1);
    Decision::Raise(Limits {
        gc_thresh1,
        gc_thresh2,
        gc_thresh3,
    })
}

/// The limits for `needed` entries, whatever the table's now.
fn wanted(needed: u64) -> Limits {
    let gc_thresh1 = needed.next_power_of_two();
    Limits {
        gc_thresh1,
        gc_thresh2: gc_thresh1 * 2,
        gc_thresh3: gc_thresh1 * 4,
    }
}

/// What the start found and did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Enough {
        limits: Limits,
        sandboxes: u32,
    },
    Raised {
        from: Limits,
        to: Limits,
        sandboxes: u32,
    },
    /// Too small, and left so: `why` says why, `wanted` what to set.
    TooSmall {
        limits: Limits,
        wanted: Limits,
        sandboxes: u32,
        why: String,
    },
    /// The limits could not be read.
    Unknown {
        wanted: Limits,
        sandboxes: u32,
        why: String,
    },
}

/// Reads the limits in `dir` (the kernel's: [`KERNEL_SETTINGS`]) and, when they are too
/// small for `sandboxes` running places and `raise` allows, writes larger ones.
pub fn check(dir: &Path, sandboxes: u32, raise: bool) -> Outcome {
    let limits = match read(dir) {
        Ok(limits) => limits,
        Err(e) => {
            return Outcome::Unknown {
                wanted: wanted(entries_needed(sandboxes)),
                sandboxes,
                why: format!("cannot read {}: {e}", dir.display()),
            };
        }
    };
    let to = match decide(limits, sandboxes) {
        Decision::Enough => return Outcome::Enough { limits, sandboxes },
        Decision::Raise(to) => to,
    };
    let too_small = |why: String| Outcome::TooSmall {
        limits,
        wanted: to,
        sandboxes,
        why,
    };
    if !raise {
        return too_small("sandbox.raise_neighbour_limits is off".into());
    }
    match write(dir, to) {
        Ok(()) => Outcome::Raised {
            from: limits,
            to,
            sandboxes,
        },
        Err(e) => too_small(e),
    }
}

impl Outcome {
    /// Says it in the log: `info` when the table is big enough (now), `warn` with the
    /// commands to run when it is not or cannot be known.
    pub fn log(&self) {
        match self {
            Outcome::Enough { limits, sandboxes } => tracing::info!(
                "neighbour table holds {} hosts (gc_thresh2; gc_thresh3 = {}), enough for \
                 {sandboxes} sandboxes",
                limits.gc_thresh2,
                limits.gc_thresh3,
            ),
            Outcome::Raised {
                from,
                to,
                sandboxes,
            } => tracing::info!(
                "raised gc_thresh1/2/3 from {} to {} for {sandboxes} sandboxes",
                from.show(),
                to.show(),
            ),
            Outcome::TooSmall {
                limits,
                wanted,
                sandboxes,
                why,
            } => tracing::warn!(
                "neighbour table limits gc_thresh1/2/3 = {} serve about {} sandboxes, too few \
                 for {sandboxes}: past that the host cannot reach every sandbox. Not raised \
                 ({why}). Run as root on the host: {}  and, to keep them after a reboot: {}",
                limits.show(),
                limits.sandboxes(),
                wanted.sysctl_command(),
                wanted.sysctl_file(),
            ),
            Outcome::Unknown {
                wanted,
                sandboxes,
                why,
            } => tracing::warn!(
                "cannot check the neighbour table's limits ({why}); {sandboxes} sandboxes \
                 need at least {} entries in gc_thresh2 and gc_thresh3. If they are smaller, \
                 run as root on the host: {}  and, to keep them after a reboot: {}",
                entries_needed(*sandboxes),
                wanted.sysctl_command(),
                wanted.sysctl_file(),
            ),
        }
    }
}

fn read(dir: &Path) -> io::Result<Limits> {
    let one = |name: &str| -> io::Result<u64> {
        let text = std::fs::read_to_string(dir.join(name))?;
        text.trim().parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name} holds {:?}: {e}", text.trim()),
            )
        })
    };
    Ok(Limits {
        gc_thresh1: one("gc_thresh1")?,
        gc_thresh2: one("gc_thresh2")?,
        gc_thresh3: one("gc_thresh3")?,
    })
}

/// Writes the hard limit first, so that the three stay ordered at every moment; `Err`
/// says which file refused.
fn write(dir: &Path, to: Limits) -> Result<(), String> {
    for (name, value) in [
        ("gc_thresh3", to.gc_thresh3),
        ("gc_thresh2", to.gc_thresh2),
        ("gc_thresh1", to.gc_thresh1),
    ] {
        let path = dir.join(name);
        // Opened for writing only, never created: a missing file is not the kernel's.
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut file| io::Write::write_all(&mut file, format!("{value}\n").as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Limits = Limits {
        gc_thresh1: 128,
        gc_thresh2: 512,
        gc_thresh3: 1024,
    };

    fn limits(gc_thresh1: u64, gc_thresh2: u64, gc_thresh3: u64) -> Limits {
        Limits {
            gc_thresh1,
            gc_thresh2,
            gc_thresh3,
        }
    }

    fn ordered(l: Limits) -> bool {
        l.gc_thresh1 < l.gc_thresh2 && l.gc_thresh2 < l.gc_thresh3
    }

    fn not_lower(to: Limits, from: Limits) -> bool {
        to.gc_thresh1 >= from.gc_thresh1
            && to.gc_thresh2 >= from.gc_thresh2
            && to.gc_thresh3 >= from.gc_thresh3
    }

    #[test]
    fn the_kernel_defaults_are_enough_for_the_default_fifty_sandboxes() {
        assert_eq!(entries_needed(50), 356);
        assert_eq!(decide(DEFAULTS, 50), Decision::Enough);
        // 128 sandboxes need 512 entries: the default soft limit, just.
        assert_eq!(decide(DEFAULTS, 128), Decision::Enough);
        assert_eq!(DEFAULTS.sandboxes(), 128);
    }

    #[test]
    fn a_thousand_sandboxes_raise_the_defaults_with_room() {
        assert_eq!(
            decide(DEFAULTS, 1000),
            Decision::Raise(limits(4096, 8192, 16384))
        );
        assert!(matches!(decide(DEFAULTS, 129), Decision::Raise(_)));
        // Once raised, the same need is met.
        assert_eq!(decide(limits(4096, 8192, 16384), 1000), Decision::Enough);
        assert!(limits(4096, 8192, 16384).sandboxes() >= 1000);
    }

    #[test]
    fn a_hard_limit_below_the_need_is_raised_too() {
        let Decision::Raise(to) = decide(limits(128, 4096, 1024), 1000) else {
            panic!("a hard limit of 1024 serves 1000 sandboxes");
        };
        assert_eq!(to, limits(4096, 8192, 16384));
    }

    #[test]
    fn no_limit_is_ever_lowered_and_the_three_stay_ordered() {
        for now in [
            DEFAULTS,
            limits(8192, 512, 1024),
            limits(5000, 6000, 1024),
            limits(100_000, 1000, 100),
            limits(1, 1, 1),
            limits(0, 0, 0),
            limits(4096, 100, 1 << 30),
        ] {
            for sandboxes in [1, 50, 500, 1000, 65_533, u32::MAX] {
                match decide(now, sandboxes) {
                    Decision::Enough => {}
                    Decision::Raise(to) => {
                        assert!(not_lower(to, now), "{now:?} → {to:?}");
                        assert!(ordered(to), "{now:?} → {to:?}");
                        assert_eq!(decide(to, sandboxes), Decision::Enough, "{to:?}");
                    }
                }
            }
        }
        // An odd table is raised only as far as the order asks.
        assert_eq!(
            decide(limits(5000, 6000, 1024), 1000),
            Decision::Raise(limits(5000, 8192, 16384))
        );
    }

    #[test]
    fn a_huge_need_is_capped() {
        assert_eq!(entries_needed(u32::MAX), MOST_ENTRIES);
        // A /16 of sandboxes still fits.
        assert!(entries_needed(65_533) < MOST_ENTRIES);
        let Decision::Raise(to) = decide(DEFAULTS, u32::MAX) else {
            panic!("the defaults serve any number of sandboxes");
        };
        assert_eq!(to, limits(1 << 18, 1 << 19, 1 << 20));
    }

    fn table(values: Limits) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, value) in [
            ("gc_thresh1", values.gc_thresh1),
            ("gc_thresh2", values.gc_thresh2),
            ("gc_thresh3", values.gc_thresh3),
        ] {
            std::fs::write(dir.path().join(name), format!("{value}\n")).unwrap();
        }
        dir
    }

    #[test]
    fn too_small_limits_are_written_larger_when_allowed() {
        let dir = table(DEFAULTS);
        let outcome = check(dir.path(), 1000, true);
        let to = limits(4096, 8192, 16384);
        assert_eq!(
            outcome,
            Outcome::Raised {
                from: DEFAULTS,
                to,
                sandboxes: 1000
            }
        );
        assert_eq!(read(dir.path()).unwrap(), to);
        assert_eq!(
            check(dir.path(), 1000, true),
            Outcome::Enough {
                limits: to,
                sandboxes: 1000
            }
        );
    }

    #[test]
    fn with_the_setting_off_nothing_is_written() {
        let dir = table(DEFAULTS);
        let outcome = check(dir.path(), 1000, false);
        assert!(
            matches!(&outcome, Outcome::TooSmall { why, wanted, .. }
                if why.contains("raise_neighbour_limits") && *wanted == limits(4096, 8192, 16384)),
            "{outcome:?}"
        );
        assert_eq!(read(dir.path()).unwrap(), DEFAULTS);
    }

    #[test]
    fn a_missing_table_is_reported_with_what_to_set() {
        let dir = tempfile::tempdir().unwrap();
        let outcome = check(&dir.path().join("nope"), 1000, true);
        assert!(
            matches!(&outcome, Outcome::Unknown { wanted, .. } if *wanted == limits(4096, 8192, 16384)),
            "{outcome:?}"
        );
        // Nothing was created in its place.
        assert!(!dir.path().join("nope").exists());
    }

    #[test]
    fn the_commands_name_every_limit() {
        let to = limits(4096, 8192, 16384);
        assert_eq!(
            to.sysctl_command(),
            "sysctl -w net.ipv4.neigh.default.gc_thresh1=4096 \
             net.ipv4.neigh.default.gc_thresh2=8192 net.ipv4.neigh.default.gc_thresh3=16384"
        );
        assert_eq!(
            to.sysctl_file(),
            "printf 'net.ipv4.neigh.default.gc_thresh1 = 4096\\n\
             net.ipv4.neigh.default.gc_thresh2 = 8192\\n\
             net.ipv4.neigh.default.gc_thresh3 = 16384\\n' > /etc/sysctl.d/60-testdrive.conf"
        );
    }
}
