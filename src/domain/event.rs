//! A sandbox's history in one language. Every change the lifecycle makes is a
//! `SandboxEvent` with structured details, and everything that reads the history —
//! receipts, reports, webhooks, pages — matches on the enum, never on text.
//!
//! It becomes text in two places only: the store keeps each event as JSON beside its
//! `kind`, and the API's `events` list shows `kind()` and the sentence `detail()`. Rewording
//! a sentence there changes nothing a receipt or a report says.

use serde::{Deserialize, Serialize};

use super::conversation::{Answers, ContactMessage};
use super::{EndReason, Timestamp};

/// What went wrong with a sandbox, in words. It is shown to the vendor and operators,
/// sent in logs and kept in the history, so it never carries the prospect's data: not what
/// a demo printed (that is `Sandbox::load_output`, the prospect's alone), nor file contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Failure(String);

impl Failure {
    pub fn new(why: impl Into<String>) -> Failure {
        Failure(why.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a sandbox ends: the input to the one end path (`Lifecycle::end`). A failure always
/// says what went wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", content = "failure", rename_all = "snake_case")]
pub enum Ending {
    /// The trial window is over.
    Expired,
    EndedByProspect,
    EndedByVendor,
    EndedByAdmin,
    Failed(Failure),
}

impl Ending {
    pub fn failed(why: impl Into<String>) -> Ending {
        Ending::Failed(Failure::new(why))
    }

    /// The reason as the sandbox record keeps it.
    pub fn reason(&self) -> EndReason {
        match self {
            Ending::Expired => EndReason::Expired,
            Ending::EndedByProspect => EndReason::EndedByProspect,
            Ending::EndedByVendor => EndReason::EndedByVendor,
            Ending::EndedByAdmin => EndReason::EndedByAdmin,
            Ending::Failed(_) => EndReason::Failed,
        }
    }

    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Ending::Failed(failure) => Some(failure),
            _ => None,
        }
    }
}

/// One change in a sandbox's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SandboxEvent {
    /// Recorded, with the prospect's files in the spool.
    Created {
        files: u32,
        bytes: u64,
        window_seconds: u32,
        from_warm_pool: bool,
    },
    /// The files are in the sandbox's data volume, and the spool copy is gone.
    DataPlaced {
        files: u32,
        path: String,
    },
    /// The container runs: started now, or already running (a warm pool member).
    Started {
        from_warm_pool: bool,
    },
    /// The demo's load command exited 0.
    Loaded,
    /// The demo answers its readiness probe.
    Ready {
        after_ms: u64,
    },
    /// The deadline moved.
    Extended {
        by_seconds: u32,
        until: Timestamp,
    },
    /// Idle for the demo's `idle_seconds`: the container stopped, the data stays.
    Slept,
    /// The container stopped by itself (a crash, the memory limit, a host restart): asleep
    /// until the next request starts it again.
    Stopped {
        exit_code: i64,
        oom_killed: bool,
    },
    Woke {
        after_ms: u64,
    },
    /// The sandbox ended. `recovered`: written at a restart, for an end the previous run
    /// recorded but could not announce.
    Ended {
        ending: Ending,
        recovered: bool,
    },
    ContainerRemoved,
    VolumesRemoved,
    /// The sandbox's directory is gone: its data directory (every copy of the prospect's
    /// files the demo saw) and any upload.
    FilesRemoved,
    /// Nothing of the sandbox is left: no container, volume or spooled upload.
    DataDeleted,
    /// The prospect answered the demo's exit questions (what they chose to tell the vendor).
    Feedback {
        answers: Answers,
    },
    /// The prospect asked to talk to a person.
    ContactRequested {
        message: ContactMessage,
    },
}

impl SandboxEvent {
    pub fn ended(ending: Ending) -> SandboxEvent {
        SandboxEvent::Ended {
            ending,
            recovered: false,
        }
    }

    /// The event's kind as the API's `events` list names it. An end is named by its reason.
    pub fn kind(&self) -> &'static str {
        use SandboxEvent::*;
        match self {
            Created { .. } => "created",
            DataPlaced { .. } => "data_placed",
            Started { .. } => "started",
            Loaded => "loaded",
            Ready { .. } => "ready",
            Extended { .. } => "extended",
            Slept => "slept",
            Stopped { .. } => "stopped",
            Woke { .. } => "woke",
            Ended { ending, .. } => ending.reason().as_str(),
            ContainerRemoved => "container_removed",
            VolumesRemoved => "volumes_removed",
            FilesRemoved => "files_removed",
            DataDeleted => "data_deleted",
            Feedback { .. } => "feedback",
            ContactRequested { .. } => "contact_requested",
        }
    }

    /// The kinds an end event may have (one per end reason).
    pub fn end_kinds() -> [&'static str; 5] {
        EndReason::ALL.map(EndReason::as_str)
    }

    /// The event in a sentence, for the API's `events` list and the consoles.
    pub fn detail(&self) -> Option<String> {
        use SandboxEvent::*;
        match self {
            Created {
                files,
                bytes,
                window_seconds,
                from_warm_pool,
            } => Some(format!(
                "{files} file(s), {bytes} bytes; trial window {window_seconds} s{}",
                if *from_warm_pool {
                    "; from the warm pool"
                } else {
                    ""
                }
            )),
            DataPlaced { files, path } => Some(format!("{files} file(s) in {path}")),
            Started { from_warm_pool } => {
                from_warm_pool.then(|| "already running: taken from the warm pool".to_string())
            }
            Ready { after_ms } | Woke { after_ms } => Some(format!("in {after_ms} ms")),
            Extended { by_seconds, until } => {
                Some(format!("by {by_seconds} s, until {}", until.to_rfc3339()))
            }
            Stopped {
                exit_code,
                oom_killed,
            } => Some(format!(
                "{}; asleep until the next request restarts it",
                exit_sentence(*exit_code, *oom_killed)
            )),
            Ended { ending, recovered } => match ending.failure() {
                Some(failure) => Some(failure.as_str().to_string()),
                None => recovered.then(|| "recorded at restart".to_string()),
            },
            DataDeleted => {
                Some("no container, volume or spooled upload of this sandbox remains".to_string())
            }
            Feedback { answers } => Some(format!("{} answer(s)", answers.len())),
            // What they wrote is the vendor's to read in the report, not a line of history.
            ContactRequested { .. } => Some("the prospect asked to talk to a person".to_string()),
            Loaded | Slept | ContainerRemoved | VolumesRemoved | FilesRemoved => None,
        }
    }
}

/// "the demo's container stopped (exit code 137, out of memory)".
pub fn exit_sentence(exit_code: i64, oom_killed: bool) -> String {
    format!(
        "the demo's container stopped (exit code {exit_code}{})",
        if oom_killed { ", out of memory" } else { "" }
    )
}

/// An event as the history keeps it: when, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    pub at: Timestamp,
    pub event: SandboxEvent,
}

/// When the first event `matching` happened (a teardown that runs again after a restart
/// repeats its removals: the first one counts).
pub fn first_at(
    events: &[EventRecord],
    matching: impl Fn(&SandboxEvent) -> bool,
) -> Option<Timestamp> {
    events.iter().find(|e| matching(&e.event)).map(|e| e.at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<SandboxEvent> {
        use SandboxEvent::*;
        vec![
            Created {
                files: 2,
                bytes: 300,
                window_seconds: 900,
                from_warm_pool: true,
            },
            DataPlaced {
                files: 2,
                path: "/data".into(),
            },
            Started {
                from_warm_pool: false,
            },
            Loaded,
            Ready { after_ms: 412 },
            Extended {
                by_seconds: 600,
                until: Timestamp::from_millis(1_795_000_000_123),
            },
            Slept,
            Stopped {
                exit_code: 137,
                oom_killed: true,
            },
            Woke { after_ms: 90 },
            SandboxEvent::ended(Ending::Expired),
            Ended {
                ending: Ending::EndedByAdmin,
                recovered: true,
            },
            SandboxEvent::ended(Ending::failed("the load command exited with code 3")),
            Ended {
                ending: Ending::failed("recorded at restart"),
                recovered: true,
            },
            ContainerRemoved,
            VolumesRemoved,
            FilesRemoved,
            DataDeleted,
            Feedback {
                answers: serde_json::from_value(serde_json::json!({"fit": "Yes"})).unwrap(),
            },
            ContactRequested {
                message: ContactMessage::parse("Call me, please").unwrap(),
            },
        ]
    }

    #[test]
    fn events_survive_the_store_unchanged() {
        for event in every_kind() {
            let stored = serde_json::to_string(&event).unwrap();
            let back: SandboxEvent = serde_json::from_str(&stored).unwrap();
            assert_eq!(back, event, "{stored}");
        }
    }

    #[test]
    fn the_api_sees_the_same_kinds_and_sentences_as_before() {
        let shown: Vec<(&str, Option<String>)> = every_kind()
            .iter()
            .map(|e| (e.kind(), e.detail()))
            .collect();
        let s = |t: &str| Some(t.to_string());
        assert_eq!(
            shown,
            [
                (
                    "created",
                    s("2 file(s), 300 bytes; trial window 900 s; from the warm pool")
                ),
                ("data_placed", s("2 file(s) in /data")),
                ("started", None),
                ("loaded", None),
                ("ready", s("in 412 ms")),
                ("extended", s("by 600 s, until 2026-11-18T11:06:40.123Z")),
                ("slept", None),
                (
                    "stopped",
                    s(
                        "the demo's container stopped (exit code 137, out of memory); \
                       asleep until the next request restarts it"
                    )
                ),
                ("woke", s("in 90 ms")),
                ("expired", None),
                ("ended_by_admin", s("recorded at restart")),
                ("failed", s("the load command exited with code 3")),
                ("failed", s("recorded at restart")),
                ("container_removed", None),
                ("volumes_removed", None),
                ("files_removed", None),
                (
                    "data_deleted",
                    s("no container, volume or spooled upload of this sandbox remains")
                ),
                ("feedback", s("1 answer(s)")),
                (
                    "contact_requested",
                    s("the prospect asked to talk to a person")
                ),
            ]
        );
    }

    #[test]
    fn an_end_is_named_by_its_reason() {
        for reason in EndReason::ALL {
            assert!(SandboxEvent::end_kinds().contains(&reason.as_str()));
        }
        let failed = Ending::failed("x");
        assert_eq!(failed.reason(), EndReason::Failed);
        assert_eq!(failed.failure().map(Failure::as_str), Some("x"));
        assert_eq!(Ending::Expired.failure(), None);
    }
}
