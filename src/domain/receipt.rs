//! The deletion receipt: after a sandbox ends, when each copy of the prospect's files and
//! each Engine object was destroyed. A pure function of the sandbox record and its history,
//! which the teardown writes as each removal happens. (`signing` signs it.)

use serde::Serialize;

use super::event::{EventRecord, SandboxEvent, first_at};
use super::{EndReason, Sandbox, SandboxId, Timestamp};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Receipt {
    #[schema(value_type = String, format = Uuid)]
    pub sandbox_id: SandboxId,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub ended_at: Timestamp,
    pub end_reason: EndReason,
    pub files: Vec<FileReceipt>,
    /// When the sandbox's container was removed; the teardown's end if it was gone already
    /// (it crashed away, or was never made).
    #[schema(value_type = String, format = DateTime)]
    pub container_removed_at: Timestamp,
    /// When the data volume holding the files was removed (likewise).
    #[schema(value_type = String, format = DateTime)]
    pub volumes_removed_at: Timestamp,
    /// When nothing of the sandbox was left: no container, volume or spooled upload.
    #[schema(value_type = String, format = DateTime)]
    pub data_deleted_at: Timestamp,
}

/// One uploaded file and the two places it was ever kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FileReceipt {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
    /// The upload directory on the service's disk: empty as soon as the files were moved
    /// into the sandbox, or removed at the teardown.
    #[schema(value_type = String, format = DateTime)]
    pub spool_copy_deleted_at: Timestamp,
    /// The sandbox's data directory (its data volume, for sandboxes made before issue 16);
    /// `null` when the files never reached it.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sandbox_copy_deleted_at: Option<Timestamp>,
}

impl Receipt {
    /// The receipt of an ended sandbox whose data is deleted; `None` before that.
    pub fn of(sandbox: &Sandbox, events: &[EventRecord]) -> Option<Receipt> {
        let ended_at = sandbox.ended_at?;
        let end_reason = sandbox.end_reason?;
        let data_deleted_at = sandbox.data_deleted_at?;
        // Teardown may run more than once (a retry, a restart): the first removal counts.
        let placed = first_at(events, |e| matches!(e, SandboxEvent::DataPlaced { .. }));
        let volumes_removed_at =
            first_at(events, |e| *e == SandboxEvent::VolumesRemoved).unwrap_or(data_deleted_at);
        // Before issue 16 the files were in the data volume.
        let files_removed_at =
            first_at(events, |e| *e == SandboxEvent::FilesRemoved).unwrap_or(volumes_removed_at);
        let files = sandbox
            .files
            .iter()
            .map(|f| FileReceipt {
                name: f.name.clone(),
                bytes: f.bytes,
                sha256: f.sha256.clone(),
                spool_copy_deleted_at: placed.unwrap_or(data_deleted_at),
                sandbox_copy_deleted_at: placed.map(|_| files_removed_at),
            })
            .collect();
        Some(Receipt {
            sandbox_id: sandbox.id,
            created_at: sandbox.created_at,
            ended_at,
            end_reason,
            files,
            container_removed_at: first_at(events, |e| *e == SandboxEvent::ContainerRemoved)
                .unwrap_or(data_deleted_at),
            volumes_removed_at,
            data_deleted_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FileRecord;
    use crate::domain::event::Ending;

    fn event(at: i64, event: SandboxEvent) -> EventRecord {
        EventRecord {
            at: Timestamp::from_millis(at),
            event,
        }
    }

    fn created(at: i64) -> EventRecord {
        event(
            at,
            SandboxEvent::Created {
                files: 1,
                bytes: 3,
                window_seconds: 900,
                from_warm_pool: false,
            },
        )
    }

    fn ended(sandbox: &mut Sandbox) {
        sandbox.ended_at = Some(Timestamp::from_millis(5_000));
        sandbox.end_reason = Some(EndReason::EndedByProspect);
        sandbox.data_deleted_at = Some(Timestamp::from_millis(5_300));
    }

    fn one_file(sandbox: &mut Sandbox) {
        sandbox.files = vec![FileRecord {
            name: "a.csv".into(),
            bytes: 3,
            sha256: "ab".into(),
        }];
    }

    #[test]
    fn no_receipt_until_the_data_is_deleted() {
        let mut sandbox = Sandbox::example();
        assert_eq!(Receipt::of(&sandbox, &[]), None);
        sandbox.ended_at = Some(Timestamp::from_millis(5_000));
        sandbox.end_reason = Some(EndReason::Expired);
        assert_eq!(
            Receipt::of(&sandbox, &[]),
            None,
            "ended, but not yet deleted"
        );
    }

    #[test]
    fn each_copy_is_dated_by_its_own_removal() {
        let mut sandbox = Sandbox::example();
        one_file(&mut sandbox);
        ended(&mut sandbox);
        let events = [
            created(1_000),
            event(
                1_100,
                SandboxEvent::DataPlaced {
                    files: 1,
                    path: "/data".into(),
                },
            ),
            event(5_000, SandboxEvent::ended(Ending::EndedByProspect)),
            event(5_100, SandboxEvent::ContainerRemoved),
            event(5_200, SandboxEvent::VolumesRemoved),
            // A second teardown after a restart must not move the dates.
            event(9_000, SandboxEvent::ContainerRemoved),
            event(5_300, SandboxEvent::DataDeleted),
        ];
        let receipt = Receipt::of(&sandbox, &events).unwrap();
        assert_eq!(receipt.container_removed_at.millis(), 5_100);
        assert_eq!(receipt.volumes_removed_at.millis(), 5_200);
        let file = &receipt.files[0];
        assert_eq!(file.spool_copy_deleted_at.millis(), 1_100);
        assert_eq!(
            file.sandbox_copy_deleted_at.map(|t| t.millis()),
            Some(5_200),
            "in a data volume (before issue 16)"
        );
        // In the sandbox's own data directory: dated by its removal.
        let mut events = events.to_vec();
        events.insert(5, event(5_250, SandboxEvent::FilesRemoved));
        let receipt = Receipt::of(&sandbox, &events).unwrap();
        assert_eq!(
            receipt.files[0].sandbox_copy_deleted_at.map(|t| t.millis()),
            Some(5_250)
        );
    }

    #[test]
    fn files_that_never_reached_the_sandbox_have_one_copy() {
        let mut sandbox = Sandbox::example();
        one_file(&mut sandbox);
        ended(&mut sandbox);
        let receipt = Receipt::of(&sandbox, &[created(1_000)]).unwrap();
        let file = &receipt.files[0];
        assert_eq!(file.spool_copy_deleted_at.millis(), 5_300);
        assert_eq!(file.sandbox_copy_deleted_at, None);
        assert_eq!(receipt.container_removed_at.millis(), 5_300);
    }
}
