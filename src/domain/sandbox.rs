//! A sandbox: its record, its states, how it ended, the files it holds and who asked for it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::conversation::{Answers, InvitationId};
use super::event::Failure;
use super::profile::ProfiledFile;
use super::token::TokenHash;
use super::{DemoId, DemoSpec, Invalid, NodeName, SandboxId, Timestamp, VendorId, parse_text};

/// A sandbox as the database keeps it.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub id: SandboxId,
    pub demo_id: DemoId,
    pub vendor_id: VendorId,
    pub token_hash: TokenHash,
    pub status: SandboxStatus,
    /// The demo as it was when the sandbox was made.
    pub spec: DemoSpec,
    pub created_at: Timestamp,
    pub ready_at: Option<Timestamp>,
    /// The deadline: kept in the database only, never in a label.
    pub expires_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub end_reason: Option<EndReason>,
    pub data_deleted_at: Option<Timestamp>,
    /// Which address of the sandbox network is this sandbox's: reserved at creation and
    /// held until `data_deleted_at`, so no other sandbox can get it meanwhile.
    pub addr_slot: Option<u32>,
    /// `ip:port` of the demo inside the sandbox network, once ready.
    pub container_addr: Option<String>,
    pub files: Vec<FileRecord>,
    pub prospect: Prospect,
    pub requests: u64,
    pub last_active_at: Option<Timestamp>,
    /// What each file looks like (for the vendor's report; never values).
    pub profiles: Vec<ProfiledFile>,
    /// Time spent using the demo: spans between requests less than 5 minutes apart.
    pub active_ms: u64,
    /// The first request through the proxy.
    pub first_opened_at: Option<Timestamp>,
    /// What the demo's load command printed when it failed: perhaps the prospect's own
    /// data, so it is shown to the sandbox token's holder only, and never goes into an
    /// event, a webhook, a report or a log.
    pub load_output: Option<String>,
    /// What went wrong, in words, when the sandbox `failed` (never what the demo printed).
    pub failure: Option<Failure>,
    /// The invitation the trial was started with, if any.
    pub invitation_id: Option<InvitationId>,
    /// The prospect's answers to the demo's `questions`, given with the files.
    pub answers: Answers,
    /// The node whose Engine runs it (its files are on that node's disk).
    pub node: NodeName,
}

impl Sandbox {
    /// What the demo's load command printed, if it failed (the prospect's alone).
    pub fn load_output(&self) -> Option<LoadOutput> {
        self.load_output.as_deref().map(LoadOutput::from_stored)
    }

    /// The demo's message and what it printed, as the prospect's views show them (nothing
    /// for an empty output).
    pub fn load_message_and_output(&self) -> (Option<String>, Option<String>) {
        match self.load_output() {
            Some(LoadOutput { message, output }) => {
                (message, Some(output).filter(|o| !o.is_empty()))
            }
            None => (None, None),
        }
    }
}

/// What a demo's load command printed when it failed: its message for the prospect (by the
/// convention, its last non-empty line on stderr) and the end of all it printed. Perhaps
/// the prospect's own data, so only the sandbox token's holder sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadOutput {
    pub message: Option<String>,
    pub output: String,
}

impl LoadOutput {
    /// As the sandbox record keeps it (one text column).
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).expect("strings serialize")
    }

    /// What `to_stored` wrote; the plain text an earlier version kept is all output.
    pub fn from_stored(raw: &str) -> LoadOutput {
        serde_json::from_str(raw).unwrap_or_else(|_| LoadOutput {
            message: None,
            output: raw.to_string(),
        })
    }
}

/// What a sandbox is at creation, before anything ran.
#[derive(Clone, Debug)]
pub struct NewSandbox {
    pub id: SandboxId,
    pub demo_id: DemoId,
    pub vendor_id: VendorId,
    pub token_hash: TokenHash,
    pub spec: DemoSpec,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub files: Vec<FileRecord>,
    pub profiles: Vec<ProfiledFile>,
    pub prospect: Prospect,
    /// Recorded while its files are still arriving (`Received` completes it).
    pub receiving: bool,
}

/// What a sandbox recorded while its files arrived gets once they are all in; its trial
/// window starts then.
#[derive(Clone, Debug)]
pub struct Received {
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub files: Vec<FileRecord>,
    pub profiles: Vec<ProfiledFile>,
    pub prospect: Prospect,
    pub answers: Answers,
    /// Taken in the same statement: a used or expired invitation refuses the trial.
    pub invitation: Option<InvitationId>,
}

/// Proxy activity gathered in memory and written in batches.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub sandbox: SandboxId,
    pub requests: u64,
    /// The first and last request of the batch.
    pub first_active_at: Timestamp,
    pub last_active_at: Timestamp,
}

#[cfg(test)]
impl Sandbox {
    /// A live sandbox of a minimal demo, for unit tests of logic over records.
    pub fn example() -> Sandbox {
        let manifest: super::DemoManifest = serde_json::from_value(serde_json::json!({
            "slug": "example", "title": "Example", "image": "img:1", "port": 80,
            "data_path": "/data"
        }))
        .expect("a valid manifest");
        let created_at = Timestamp::from_millis(1_000);
        Sandbox {
            id: SandboxId::new(),
            demo_id: DemoId::new(),
            vendor_id: VendorId::new(),
            token_hash: TokenHash::of("tds_example"),
            status: SandboxStatus::Ready,
            spec: DemoSpec::parse(manifest, &super::Policy::default()).expect("a valid spec"),
            created_at,
            ready_at: Some(created_at),
            expires_at: created_at.plus_seconds(900),
            ended_at: None,
            end_reason: None,
            data_deleted_at: None,
            addr_slot: Some(1),
            container_addr: None,
            files: Vec::new(),
            prospect: Prospect::default(),
            requests: 0,
            last_active_at: None,
            profiles: Vec::new(),
            active_ms: 0,
            first_opened_at: None,
            load_output: None,
            failure: None,
            invitation_id: None,
            answers: Answers::default(),
            node: NodeName::parse("local").expect("a valid node name"),
        }
    }
}

/// `provisioning` → `ready` ⇄ `sleeping` → `ended`, or `failed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SandboxStatus {
    Provisioning,
    Ready,
    Sleeping,
    Ended,
    Failed,
}

impl SandboxStatus {
    /// The states in which a sandbox holds Engine objects and counts against capacity.
    pub const LIVE: [SandboxStatus; 3] = [
        SandboxStatus::Provisioning,
        SandboxStatus::Ready,
        SandboxStatus::Sleeping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxStatus::Provisioning => "provisioning",
            SandboxStatus::Ready => "ready",
            SandboxStatus::Sleeping => "sleeping",
            SandboxStatus::Ended => "ended",
            SandboxStatus::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        Ok(match raw {
            "provisioning" => SandboxStatus::Provisioning,
            "ready" => SandboxStatus::Ready,
            "sleeping" => SandboxStatus::Sleeping,
            "ended" => SandboxStatus::Ended,
            "failed" => SandboxStatus::Failed,
            _ => {
                return Err(Invalid::new(
                    "status",
                    "must be one of provisioning, ready, sleeping, ended, failed",
                ));
            }
        })
    }

    pub fn is_live(self) -> bool {
        Self::LIVE.contains(&self)
    }
}

impl fmt::Display for SandboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Expired,
    EndedByProspect,
    EndedByVendor,
    EndedByAdmin,
    Failed,
}

impl EndReason {
    pub const ALL: [EndReason; 5] = [
        EndReason::Expired,
        EndReason::EndedByProspect,
        EndReason::EndedByVendor,
        EndReason::EndedByAdmin,
        EndReason::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::EndedByProspect => "ended_by_prospect",
            EndReason::EndedByVendor => "ended_by_vendor",
            EndReason::EndedByAdmin => "ended_by_admin",
            EndReason::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "expired" => EndReason::Expired,
            "ended_by_prospect" => EndReason::EndedByProspect,
            "ended_by_vendor" => EndReason::EndedByVendor,
            "ended_by_admin" => EndReason::EndedByAdmin,
            "failed" => EndReason::Failed,
            _ => return None,
        })
    }

    /// The status a sandbox ending for this reason settles in.
    pub fn final_status(self) -> SandboxStatus {
        match self {
            EndReason::Failed => SandboxStatus::Failed,
            _ => SandboxStatus::Ended,
        }
    }
}

/// One uploaded file as the prospect sent it: what the deletion receipt will name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileRecord {
    pub name: String,
    pub bytes: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
}

/// The optional information sheet a prospect fills in: the vendor's reason to offer a trial.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Prospect {
    pub email: Option<String>,
    pub company: Option<String>,
    pub needs: Option<String>,
}

impl Prospect {
    pub fn parse_email(raw: &str) -> Result<Option<String>, Invalid> {
        let email = parse_text("email", raw, 254, false)?;
        if email.is_empty() {
            return Ok(None);
        }
        let valid = email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        }) && !email.contains(char::is_whitespace);
        if !valid {
            return Err(Invalid::new("email", "is not an email address"));
        }
        Ok(Some(email))
    }

    pub fn parse_company(raw: &str) -> Result<Option<String>, Invalid> {
        Ok(Some(parse_text("company", raw, 200, false)?).filter(|c| !c.is_empty()))
    }

    pub fn parse_needs(raw: &str) -> Result<Option<String>, Invalid> {
        Ok(Some(parse_text("needs", raw, 4000, true)?).filter(|n| !n.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in [
            SandboxStatus::Provisioning,
            SandboxStatus::Ready,
            SandboxStatus::Sleeping,
            SandboxStatus::Ended,
            SandboxStatus::Failed,
        ] {
            assert_eq!(SandboxStatus::parse(s.as_str()).unwrap(), s);
        }
        assert!(SandboxStatus::parse("READY").is_err());
    }

    #[test]
    fn load_output_is_kept_whole_and_read_back() {
        let printed = LoadOutput {
            message: Some("a.csv: line 3 has 1 field".into()),
            output: "ok b.csv\na.csv: line 3 has 1 field".into(),
        };
        assert_eq!(LoadOutput::from_stored(&printed.to_stored()), printed);
        // What an earlier version kept: the output alone.
        let older = LoadOutput::from_stored("bad rows in a.csv");
        assert_eq!(
            (older.message, older.output.as_str()),
            (None, "bad rows in a.csv")
        );
    }

    #[test]
    fn information_sheet_fields_are_checked() {
        assert_eq!(
            Prospect::parse_email(" ana@example.com ")
                .unwrap()
                .as_deref(),
            Some("ana@example.com")
        );
        assert_eq!(Prospect::parse_email("").unwrap(), None);
        for bad in ["ana", "@example.com", "ana@localhost", "a na@example.com"] {
            assert!(Prospect::parse_email(bad).is_err(), "{bad}");
        }
        assert!(Prospect::parse_needs("line one\nline two").is_ok());
        assert!(Prospect::parse_company("x".repeat(201).as_str()).is_err());
    }
}
