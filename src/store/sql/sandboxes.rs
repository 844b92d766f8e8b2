//! Sandboxes: the state machine's conditional updates, deadlines, sleep and wake, capacity.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{
    SqlStore, corrupt, count, held_slots, id_of, invitation_trials, json, live, running, ts,
};
use crate::domain::token::TokenHash;
use crate::domain::{
    DemoId, EndReason, Ending, Failure, InvitationId, NewSandbox, NodeName, Received, Sandbox,
    SandboxId, SandboxStatus, Timestamp, Usage, VendorId,
};
use crate::store::{Capacity, LiveCounts, Result, SandboxFilter, SandboxStore, StoreError, Wake};

pub(super) fn sandbox_from(row: &AnyRow) -> Result<Sandbox> {
    let end_reason: Option<String> = row.try_get("end_reason")?;
    Ok(Sandbox {
        id: SandboxId::parse(row.try_get("id")?).map_err(corrupt)?,
        demo_id: DemoId::parse(row.try_get("demo_id")?).map_err(corrupt)?,
        vendor_id: VendorId::parse(row.try_get("vendor_id")?).map_err(corrupt)?,
        token_hash: TokenHash::from_hex(row.try_get("token_hash")?)
            .ok_or_else(|| corrupt("token hash"))?,
        status: SandboxStatus::parse(row.try_get("status")?).map_err(corrupt)?,
        spec: serde_json::from_str(row.try_get("spec")?).map_err(corrupt)?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        ready_at: ts(row.try_get("ready_at")?),
        expires_at: Timestamp::from_millis(row.try_get("expires_at")?),
        ended_at: ts(row.try_get("ended_at")?),
        end_reason: end_reason
            .map(|r| EndReason::parse(&r).ok_or_else(|| corrupt(r)))
            .transpose()?,
        data_deleted_at: ts(row.try_get("data_deleted_at")?),
        addr_slot: row
            .try_get::<Option<i64>, _>("addr_slot")?
            .map(|slot| slot as u32),
        container_addr: row.try_get("container_addr")?,
        files: serde_json::from_str(row.try_get("files")?).map_err(corrupt)?,
        prospect: serde_json::from_str(row.try_get("prospect")?).map_err(corrupt)?,
        requests: row.try_get::<i64, _>("requests")? as u64,
        last_active_at: ts(row.try_get("last_active_at")?),
        profiles: serde_json::from_str(row.try_get("profiles")?).map_err(corrupt)?,
        active_ms: row.try_get::<i64, _>("active_ms")?.max(0) as u64,
        first_opened_at: ts(row.try_get("first_opened_at")?),
        load_output: row.try_get("load_output")?,
        failure: row
            .try_get::<Option<String>, _>("failure")?
            .map(Failure::new),
        invitation_id: row
            .try_get::<Option<String>, _>("invitation_id")?
            .map(|id| InvitationId::parse(&id).map_err(corrupt))
            .transpose()?,
        answers: serde_json::from_str(row.try_get("answers")?).map_err(corrupt)?,
        node: NodeName::parse(row.try_get("node")?).map_err(corrupt)?,
    })
}

/// Records a new sandbox of `node` if the places `capacity` names are free, at `slot` or
/// else the node's lowest free address slot; false if a limit left no place.
/// `count_running`: whether it needs a running place (a claimed warm member already holds
/// one). The one way a sandbox row is written, for cold starts and warm claims alike; the
/// caller holds the demo's and the node's `serialise` locks in `tx`.
pub(super) async fn insert_row(
    tx: &mut sqlx::AnyConnection,
    node: &NodeName,
    s: &NewSandbox,
    slot: Option<u32>,
    capacity: Capacity,
    count_running: bool,
) -> Result<bool> {
    let running_cap = if count_running {
        i64::from(capacity.running)
    } else {
        i64::MAX
    };
    let done = sqlx::query(concat!(
        "INSERT INTO sandboxes (id, demo_id, vendor_id, token_hash, status, spec, created_at,
                                expires_at, files, prospect, idle_ms, profiles, receiving,
                                addr_slot, node)
         SELECT $1, $2, $3, $4, 'provisioning', $5, $6, $7, $8, $9, $10, $11, $16,
                COALESCE($12, (SELECT MIN(free) FROM (",
        held_slots!("$17"),
        ") AS candidates)), $17
         WHERE (SELECT COUNT(*) FROM sandboxes WHERE node = $17 AND ",
        running!(),
        ") < $13
           AND (SELECT COUNT(*) FROM sandboxes WHERE node = $17 AND status IN ",
        live!(),
        ") < $14
           AND (SELECT COUNT(*) FROM sandboxes WHERE demo_id = $2 AND status IN ",
        live!(),
        ") < $15"
    ))
    .bind(s.id.to_string())
    .bind(s.demo_id.to_string())
    .bind(s.vendor_id.to_string())
    .bind(s.token_hash.to_hex())
    .bind(json(&s.spec)?)
    .bind(s.created_at.millis())
    .bind(s.expires_at.millis())
    .bind(json(&s.files)?)
    .bind(json(&s.prospect)?)
    .bind(s.spec.trial.idle_seconds.map(|secs| i64::from(secs) * 1000))
    .bind(json(&s.profiles)?)
    .bind(slot.map(i64::from))
    .bind(running_cap)
    .bind(i64::from(capacity.live))
    .bind(capacity.per_demo.map_or(i64::MAX, i64::from))
    .bind(i64::from(s.receiving))
    .bind(node.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

impl SqlStore {
    /// The `serialise` keys of a new sandbox of `demo` on this node: the demo's (its cap is
    /// the deployment's) before the node's (its places and slots).
    pub(super) fn placing_keys(&self, demo: DemoId) -> [String; 2] {
        [format!("demo:{demo}"), format!("node:{}", self.node)]
    }

    /// Which limit refused a sandbox of `demo`, in words.
    pub(super) async fn which_limit(
        &self,
        demo: DemoId,
        capacity: Capacity,
        count_running: bool,
    ) -> Result<StoreError> {
        let here = self.count_live_by_state(None).await?;
        let of_demo: i64 = sqlx::query_scalar(concat!(
            "SELECT COUNT(*) FROM sandboxes WHERE demo_id = $1 AND status IN ",
            live!()
        ))
        .bind(demo.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(StoreError::Capacity(
            if count_running && here.running >= u64::from(capacity.running) {
                format!("all {} running places are taken", capacity.running)
            } else if here.total() >= u64::from(capacity.live) {
                format!(
                    "{} sandboxes are live (running or asleep), the most there may be",
                    capacity.live
                )
            } else {
                format!(
                    "this demo allows {} sandboxes at once and has {}",
                    capacity.per_demo.unwrap_or(u32::MAX),
                    of_demo
                )
            },
        ))
    }
}

#[async_trait]
impl SandboxStore for SqlStore {
    async fn insert_sandbox(&self, s: &NewSandbox, capacity: Capacity) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let [demo_key, node_key] = self.placing_keys(s.demo_id);
        self.serialise(&mut tx, &[&demo_key, &node_key]).await?;
        if insert_row(&mut tx, &self.node, s, None, capacity, true).await? {
            tx.commit().await?;
            return Ok(());
        }
        drop(tx);
        Err(self.which_limit(s.demo_id, capacity, true).await?)
    }

    async fn receive(&self, id: SandboxId, r: &Received) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        if let Some(invitation) = r.invitation {
            // Taken here, in the same transaction: two uploads racing for the last trial of
            // an invitation cannot both have it (in Postgres, the invitation's lock first:
            // the count of its trials is of other rows, which the update's re-check does
            // not see). A trial that failed leaves its place.
            self.serialise(&mut tx, &[&format!("invitation:{invitation}")])
                .await?;
            let taken = sqlx::query(concat!(
                "UPDATE invitations SET sandbox_id = $1, used_at = $2
                 WHERE id = $3 AND expires_at > $2
                   AND demo_id = (SELECT demo_id FROM sandboxes WHERE id = $1)
                   AND ",
                invitation_trials!("$3"),
                " < max_trials"
            ))
            .bind(id.to_string())
            .bind(r.created_at.millis())
            .bind(invitation.to_string())
            .execute(&mut *tx)
            .await?;
            if taken.rows_affected() != 1 {
                return Err(StoreError::Conflict(
                    "this invitation has expired or has been used".to_string(),
                ));
            }
        }
        let done = sqlx::query(
            "UPDATE sandboxes
             SET receiving = 0, created_at = $1, expires_at = $2, files = $3, profiles = $4,
                 prospect = $5, answers = $6, invitation_id = $7
             WHERE id = $8 AND receiving = 1 AND status = 'provisioning'",
        )
        .bind(r.created_at.millis())
        .bind(r.expires_at.millis())
        .bind(json(&r.files)?)
        .bind(json(&r.profiles)?)
        .bind(json(&r.prospect)?)
        .bind(json(&r.answers)?)
        .bind(r.invitation.map(|i| i.to_string()))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn forget_unreceived(&self, id: Option<SandboxId>) -> Result<Vec<SandboxId>> {
        // One sandbox wherever it is; every one: this node's.
        let query = sqlx::query(
            "DELETE FROM sandboxes
             WHERE receiving = 1 AND (id = $1 OR ($1 IS NULL AND node = $2))
             RETURNING id",
        )
        .bind(id.map(|id| id.to_string()))
        .bind(self.node.as_str());
        self.all(query, id_of).await
    }

    async fn sandbox(&self, id: SandboxId) -> Result<Option<Sandbox>> {
        let query = sqlx::query("SELECT * FROM sandboxes WHERE id = $1").bind(id.to_string());
        self.one(query, sandbox_from).await
    }

    async fn sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<Sandbox>> {
        let query = sqlx::query(
            "SELECT * FROM sandboxes
             WHERE receiving = 0
               AND ($1 IS NULL OR vendor_id = $1)
               AND ($2 IS NULL OR demo_id = $2)
               AND ($3 IS NULL OR status = $3)
               AND ($4 IS NULL OR ended_at IS NULL OR ended_at >= $4)
               AND ($5 IS NULL OR id < $5)
             ORDER BY id DESC LIMIT $6",
        )
        .bind(filter.vendor.map(|v| v.to_string()))
        .bind(filter.demo.map(|d| d.to_string()))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.ended_since.map(|t| t.millis()))
        .bind(filter.before.map(|b| b.to_string()))
        .bind(i64::from(filter.limit));
        self.all(query, sandbox_from).await
    }

    async fn ids_with_status(&self, status: SandboxStatus) -> Result<Vec<SandboxId>> {
        let query = sqlx::query("SELECT id FROM sandboxes WHERE node = $1 AND status = $2")
            .bind(self.node.as_str())
            .bind(status.as_str());
        self.all(query, id_of).await
    }

    async fn count_live_by_state(&self, demo: Option<DemoId>) -> Result<LiveCounts> {
        let row = sqlx::query(concat!(
            "SELECT COUNT(CASE WHEN ",
            running!(),
            " THEN 1 END) AS running,
                    COUNT(CASE WHEN status = 'sleeping' AND waking_since IS NULL THEN 1 END)
                        AS sleeping
             FROM sandboxes WHERE node = $2 AND status IN ",
            live!(),
            " AND ($1 IS NULL OR demo_id = $1)"
        ))
        .bind(demo.map(|d| d.to_string()))
        .bind(self.node.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(LiveCounts {
            running: count(row.try_get("running")?),
            sleeping: count(row.try_get("sleeping")?),
        })
    }

    async fn mark_ready(&self, id: SandboxId, at: Timestamp, addr: &str) -> Result<bool> {
        let query = sqlx::query(
            "UPDATE sandboxes SET status = 'ready', ready_at = $1, container_addr = $2
             WHERE id = $3 AND status = 'provisioning'",
        )
        .bind(at.millis())
        .bind(addr)
        .bind(id.to_string());
        self.changed(query).await
    }

    async fn set_deadline(&self, id: SandboxId, expires_at: Timestamp) -> Result<bool> {
        let query = sqlx::query(concat!(
            "UPDATE sandboxes SET expires_at = $1 WHERE id = $2 AND status IN ",
            live!()
        ))
        .bind(expires_at.millis())
        .bind(id.to_string());
        self.changed(query).await
    }

    async fn end(&self, id: SandboxId, at: Timestamp, ending: &Ending) -> Result<bool> {
        let reason = ending.reason();
        let query = sqlx::query(concat!(
            "UPDATE sandboxes SET status = $1, end_reason = $2, failure = $3, ended_at = $4,
                 waking_since = NULL
             WHERE id = $5 AND status IN ",
            live!()
        ))
        .bind(reason.final_status().as_str())
        .bind(reason.as_str())
        .bind(ending.failure().map(Failure::as_str))
        .bind(at.millis())
        .bind(id.to_string());
        self.changed(query).await
    }

    async fn end_due(&self, now: Timestamp) -> Result<Vec<SandboxId>> {
        let query = sqlx::query(concat!(
            "UPDATE sandboxes SET status = 'ended', end_reason = 'expired', ended_at = $1,
                 waking_since = NULL
             WHERE node = $2 AND status IN ",
            live!(),
            " AND expires_at <= $1
             RETURNING id"
        ))
        .bind(now.millis())
        .bind(self.node.as_str());
        self.all(query, id_of).await
    }

    async fn next_deadline(&self) -> Result<Option<Timestamp>> {
        let next: Option<i64> = sqlx::query_scalar(concat!(
            "SELECT MIN(expires_at) FROM sandboxes WHERE node = $1 AND status IN ",
            live!()
        ))
        .bind(self.node.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(ts(next))
    }

    async fn mark_data_deleted(&self, id: SandboxId, at: Timestamp) -> Result<bool> {
        let query = sqlx::query(
            "UPDATE sandboxes SET data_deleted_at = $1, container_addr = NULL, client_key = NULL
             WHERE id = $2 AND data_deleted_at IS NULL",
        )
        .bind(at.millis())
        .bind(id.to_string());
        self.changed(query).await
    }

    async fn forget_load_outputs(&self, now: Timestamp) -> Result<u64> {
        let query = sqlx::query(
            "UPDATE sandboxes SET load_output = NULL
             WHERE load_output IS NOT NULL AND expires_at <= $1",
        )
        .bind(now.millis());
        Ok(query.execute(&self.pool).await?.rows_affected())
    }

    async fn set_load_output(&self, id: SandboxId, output: &str) -> Result<()> {
        let query = sqlx::query("UPDATE sandboxes SET load_output = $1 WHERE id = $2")
            .bind(output)
            .bind(id.to_string());
        self.run(query).await
    }

    async fn pending_teardowns(&self) -> Result<Vec<SandboxId>> {
        let query = sqlx::query(
            "SELECT id FROM sandboxes
             WHERE node = $1 AND data_deleted_at IS NULL AND status IN ('ended', 'failed')
             ORDER BY ended_at",
        )
        .bind(self.node.as_str());
        self.all(query, id_of).await
    }

    async fn sleep_due(&self, now: Timestamp) -> Result<Vec<SandboxId>> {
        let query = sqlx::query(
            "UPDATE sandboxes SET status = 'sleeping'
             WHERE node = $2 AND status = 'ready' AND idle_ms IS NOT NULL
               AND COALESCE(last_active_at, ready_at) + idle_ms <= $1
             RETURNING id",
        )
        .bind(now.millis())
        .bind(self.node.as_str());
        self.all(query, id_of).await
    }

    async fn next_idle(&self) -> Result<Option<Timestamp>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(COALESCE(last_active_at, ready_at) + idle_ms) FROM sandboxes
             WHERE node = $1 AND status = 'ready' AND idle_ms IS NOT NULL",
        )
        .bind(self.node.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(ts(next))
    }

    async fn mark_asleep(&self, id: SandboxId) -> Result<bool> {
        let query = sqlx::query(
            "UPDATE sandboxes SET status = 'sleeping' WHERE id = $1 AND status = 'ready'",
        )
        .bind(id.to_string());
        self.changed(query).await
    }

    async fn reserve_wake(&self, id: SandboxId, at: Timestamp, max_running: u32) -> Result<Wake> {
        // The count of running sandboxes is of other rows: in Postgres, under the node's
        // lock, as a new sandbox's places are.
        let mut tx = self.pool.begin().await?;
        self.serialise(&mut tx, &[&format!("node:{}", self.node)])
            .await?;
        let done = sqlx::query(concat!(
            "UPDATE sandboxes SET waking_since = $1
             WHERE id = $2 AND status = 'sleeping' AND waking_since IS NULL
               AND (SELECT COUNT(*) FROM sandboxes WHERE node = $4 AND ",
            running!(),
            ") < $3"
        ))
        .bind(at.millis())
        .bind(id.to_string())
        .bind(i64::from(max_running))
        .bind(self.node.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if done.rows_affected() == 1 {
            return Ok(Wake::Reserved);
        }
        let asleep: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM sandboxes WHERE id = $1 AND status = 'sleeping' AND waking_since IS NULL",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(if asleep.is_some() {
            Wake::NoRoom
        } else {
            Wake::NotSleeping
        })
    }

    async fn release_wake(&self, id: SandboxId) -> Result<()> {
        let query = sqlx::query("UPDATE sandboxes SET waking_since = NULL WHERE id = $1")
            .bind(id.to_string());
        self.run(query).await
    }

    async fn release_all_wakes(&self) -> Result<()> {
        let query = sqlx::query(
            "UPDATE sandboxes SET waking_since = NULL WHERE node = $1 AND waking_since IS NOT NULL",
        )
        .bind(self.node.as_str());
        self.run(query).await
    }

    async fn mark_awake(&self, id: SandboxId, at: Timestamp) -> Result<bool> {
        let query = sqlx::query(
            "UPDATE sandboxes SET status = 'ready', waking_since = NULL,
                 last_active_at = CASE WHEN COALESCE(last_active_at, 0) > $1
                                       THEN last_active_at ELSE $1 END
             WHERE id = $2 AND status = 'sleeping'",
        )
        .bind(at.millis())
        .bind(id.to_string());
        self.changed(query).await
    }

    async fn add_usage(&self, batch: &[Usage]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for usage in batch {
            // Active time: the batch's own span, plus the gap since the last request before
            // it when that was less than five minutes.
            sqlx::query(
                "UPDATE sandboxes SET requests = requests + $1,
                     active_ms = active_ms + ($3 - $2)
                         + CASE WHEN last_active_at IS NOT NULL AND $2 >= last_active_at
                                     AND $2 - last_active_at < 300000
                                THEN $2 - last_active_at ELSE 0 END,
                     first_opened_at = COALESCE(first_opened_at, $2),
                     last_active_at = CASE WHEN COALESCE(last_active_at, 0) > $3
                                           THEN last_active_at ELSE $3 END
                 WHERE id = $4",
            )
            .bind(usage.requests as i64)
            .bind(usage.first_active_at.millis())
            .bind(usage.last_active_at.millis())
            .bind(usage.sandbox.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_client_key(&self, id: SandboxId, client: &str) -> Result<()> {
        let query = sqlx::query(
            "UPDATE sandboxes SET client_key = $1 WHERE id = $2 AND data_deleted_at IS NULL",
        )
        .bind(client)
        .bind(id.to_string());
        self.run(query).await
    }

    async fn count_live_for_client(&self, client: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(concat!(
            "SELECT COUNT(*) FROM sandboxes WHERE client_key = $1 AND status IN ",
            live!()
        ))
        .bind(client)
        .fetch_one(&self.pool)
        .await?;
        Ok(count(n))
    }
}
