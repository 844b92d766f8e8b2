//! The vendor's trial report: what the prospect did, never the data itself. The information
//! sheet, how long and how much the demo was used, how soon it was first opened, extensions,
//! how the trial ended, the shape of each file (profiled while it streamed in), and the
//! conversation: the invitation, the answers before and after, contact requests. Built
//! from the sandbox record and its history, so it outlives the data.

use serde::Serialize;

use super::conversation::{Answers, Invitation, InvitationId};
use super::event::{EventRecord, SandboxEvent};
use super::profile::{FileProfile, ProfiledFile};
use super::{
    DemoId, EndReason, FileRecord, Prospect, Sandbox, SandboxId, SandboxStatus, Timestamp,
};

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TrialReport {
    #[schema(value_type = String, format = Uuid)]
    pub sandbox_id: SandboxId,
    #[schema(value_type = String, format = Uuid)]
    pub demo_id: DemoId,
    pub demo: String,
    pub status: SandboxStatus,
    pub prospect: Prospect,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ready_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<Timestamp>,
    pub end_reason: Option<EndReason>,
    /// The trial window first asked for.
    pub window_seconds: u64,
    pub extensions: Extensions,
    pub usage: ReportUsage,
    pub files: Vec<FileReport>,
    /// The invitation the trial came from.
    pub invitation: Option<InvitationReport>,
    /// Answers to the demo's `questions`, given with the files.
    pub answers: Answers,
    /// Answers to the demo's `exit_questions`, each time they were sent.
    pub feedback: Vec<FeedbackReport>,
    /// Each time the prospect asked to talk to a person.
    pub contact_requests: Vec<ContactReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct InvitationReport {
    #[schema(value_type = String, format = Uuid)]
    pub id: InvitationId,
    pub company: String,
    pub email: Option<String>,
    pub note: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub opened_at: Option<Timestamp>,
}

impl From<&Invitation> for InvitationReport {
    fn from(i: &Invitation) -> Self {
        InvitationReport {
            id: i.id,
            company: i.company.clone(),
            email: i.email.clone(),
            note: i.note.clone(),
            created_at: i.created_at,
            opened_at: i.opened_at,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FeedbackReport {
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub answers: Answers,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ContactReport {
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Extensions {
    pub count: u32,
    pub seconds_added: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReportUsage {
    /// Requests through testdrive to the demo.
    pub requests: u64,
    /// Time spent in the demo: spans between requests less than 5 minutes apart.
    pub active_seconds: u64,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub first_opened_at: Option<Timestamp>,
    /// From the sandbox being ready to its first request.
    pub seconds_to_first_open: Option<u64>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_active_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FileReport {
    pub name: String,
    pub bytes: u64,
    /// `null` for a format that is not profiled (anything but CSV, TSV, JSON and NDJSON).
    pub profile: Option<FileProfile>,
}

impl FileReport {
    /// A file with its profile (profiled while it streamed in).
    fn of(file: &FileRecord, profiles: &[ProfiledFile]) -> FileReport {
        let profile = profiles.iter().find(|p| p.name == file.name);
        FileReport {
            name: file.name.clone(),
            bytes: file.bytes,
            profile: profile.and_then(|p| p.profile.clone()),
        }
    }
}

impl TrialReport {
    /// `invitation`: the one the trial came with (`sandbox.invitation_id`), if still kept.
    pub fn of(
        sandbox: &Sandbox,
        events: &[EventRecord],
        invitation: Option<&Invitation>,
    ) -> TrialReport {
        let feedback = events
            .iter()
            .filter_map(|e| match &e.event {
                SandboxEvent::Feedback { answers } => Some(FeedbackReport {
                    at: e.at,
                    answers: answers.clone(),
                }),
                _ => None,
            })
            .collect();
        let contact_requests = events
            .iter()
            .filter_map(|e| match &e.event {
                SandboxEvent::ContactRequested { message } => Some(ContactReport {
                    at: e.at,
                    message: message.as_str().to_string(),
                }),
                _ => None,
            })
            .collect();
        let extensions: Vec<u64> = events
            .iter()
            .filter_map(|e| match e.event {
                SandboxEvent::Extended { by_seconds, .. } => Some(u64::from(by_seconds)),
                _ => None,
            })
            .collect();
        let seconds_added: u64 = extensions.iter().sum();
        let lifetime = sandbox.created_at.until(sandbox.expires_at).as_secs();
        let files = sandbox.files.iter();
        let files = files
            .map(|f| FileReport::of(f, &sandbox.profiles))
            .collect();
        TrialReport {
            sandbox_id: sandbox.id,
            demo_id: sandbox.demo_id,
            demo: sandbox.spec.title.clone(),
            status: sandbox.status,
            prospect: sandbox.prospect.clone(),
            created_at: sandbox.created_at,
            ready_at: sandbox.ready_at,
            ended_at: sandbox.ended_at,
            end_reason: sandbox.end_reason,
            window_seconds: lifetime.saturating_sub(seconds_added),
            extensions: Extensions {
                count: extensions.len() as u32,
                seconds_added,
            },
            usage: ReportUsage {
                requests: sandbox.requests,
                active_seconds: sandbox.active_ms / 1000,
                first_opened_at: sandbox.first_opened_at,
                seconds_to_first_open: sandbox.first_opened_at.map(|first| {
                    sandbox
                        .ready_at
                        .unwrap_or(sandbox.created_at)
                        .until(first)
                        .as_secs()
                }),
                last_active_at: sandbox.last_active_at,
            },
            files,
            invitation: invitation.map(InvitationReport::from),
            answers: sandbox.answers.clone(),
            feedback,
            contact_requests,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FileRecord;
    use crate::domain::profile::ProfiledFile;

    #[test]
    fn extensions_usage_and_files_are_read_from_the_record() {
        let mut sandbox = Sandbox::example();
        // Created at 1 s with a 900 s window, extended twice by 300 s.
        sandbox.expires_at = sandbox.created_at.plus_seconds(1500);
        sandbox.ready_at = Some(Timestamp::from_millis(2_000));
        sandbox.first_opened_at = Some(Timestamp::from_millis(12_000));
        sandbox.active_ms = 65_432;
        sandbox.files = vec![
            FileRecord {
                name: "a.csv".into(),
                bytes: 10,
                sha256: "x".into(),
            },
            FileRecord {
                name: "b.bin".into(),
                bytes: 3,
                sha256: "y".into(),
            },
        ];
        let profile = FileProfile::Csv {
            delimiter: ",".into(),
            header: true,
            columns: vec![],
            rows: 2,
        };
        sandbox.profiles = vec![
            ProfiledFile {
                name: "a.csv".into(),
                profile: Some(profile.clone()),
            },
            ProfiledFile {
                name: "b.bin".into(),
                profile: None,
            },
        ];
        let extended = |until: i64| EventRecord {
            at: Timestamp::from_millis(5_000),
            event: SandboxEvent::Extended {
                by_seconds: 300,
                until: Timestamp::from_millis(until),
            },
        };
        let events = [extended(1_201_000), extended(1_501_000)];
        let report = TrialReport::of(&sandbox, &events, None);
        assert_eq!(report.window_seconds, 900);
        assert_eq!(
            report.extensions,
            Extensions {
                count: 2,
                seconds_added: 600
            }
        );
        assert_eq!(report.usage.active_seconds, 65);
        assert_eq!(report.usage.seconds_to_first_open, Some(10));
        assert_eq!(report.files[0].profile, Some(profile));
        assert_eq!(report.files[1].profile, None);
    }
}
