//! The embedded store: one SQLite file in WAL mode, schema from `migrations/`.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};

use super::{
    Attempt, AttemptOutcome, Capacity, Delivery, DeliveryRecord, Demo, Event, LiveCounts,
    NewDelivery, NewSandbox, NewWarmMember, Result, Sandbox, SandboxFilter, Store, StoreError,
    Usage, Vendor, Wake, WarmMember, WarmState,
};
use crate::domain::token::TokenHash;
use crate::domain::{DemoId, EndReason, SandboxId, SandboxStatus, Timestamp, VendorId, VendorName};

/// The lowest free address slot is 0 or one past a held slot: these candidates, minus the
/// held slots.
/// Slots are held by sandboxes until their data is deleted, and by warm pool members.
macro_rules! held_slots {
    () => {
        "SELECT 0 AS free
         UNION SELECT addr_slot + 1 FROM sandboxes
               WHERE addr_slot IS NOT NULL AND data_deleted_at IS NULL
         UNION SELECT addr_slot + 1 FROM warm_members
         EXCEPT SELECT addr_slot FROM sandboxes
               WHERE addr_slot IS NOT NULL AND data_deleted_at IS NULL
         EXCEPT SELECT addr_slot FROM warm_members"
    };
}

/// The condition of a sandbox that costs compute: provisioning, ready, or being woken.
macro_rules! running {
    () => {
        "(status IN ('provisioning', 'ready') OR (status = 'sleeping' AND waking_since IS NOT NULL))"
    };
}

/// The statuses of a live sandbox, as SQL (a macro so queries stay `&'static str`).
macro_rules! live {
    () => {
        "('provisioning', 'ready', 'sleeping')"
    };
}

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `sqlite::memory:`)
    /// and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // An in-memory database exists once per connection: keep exactly one.
        let max = if url.contains(":memory:") { 1 } else { 8 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(e.into()))?;
        sqlx::query("INSERT OR IGNORE INTO meta (key, value) VALUES ('instance', ?)")
            .bind(uuid::Uuid::new_v4().simple().to_string())
            .execute(&pool)
            .await?;
        Ok(SqliteStore { pool })
    }
}

fn warm_from(row: &SqliteRow) -> Result<WarmMember> {
    let id: String = row.try_get("id")?;
    let demo: String = row.try_get("demo_id")?;
    let state: String = row.try_get("state")?;
    let spec: String = row.try_get("spec")?;
    Ok(WarmMember {
        id: SandboxId::parse(&id)
            .map_err(|_| StoreError::Corrupt(format!("warm member id {id:?}")))?,
        demo_id: DemoId::parse(&demo)
            .map_err(|_| StoreError::Corrupt(format!("demo id {demo:?}")))?,
        spec: serde_json::from_str(&spec).map_err(corrupt)?,
        state: WarmState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("warm member state {state:?}")))?,
        addr_slot: row.try_get::<i64, _>("addr_slot")? as u32,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

fn conflict_on_unique(err: sqlx::Error, what: &str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(what.to_string())
        }
        _ => StoreError::Unavailable(err),
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn ts(ms: Option<i64>) -> Option<Timestamp> {
    ms.map(Timestamp::from_millis)
}

fn vendor_from(row: &SqliteRow) -> Result<Vendor> {
    Ok(Vendor {
        id: VendorId::parse(row.try_get("id")?).map_err(corrupt)?,
        name: VendorName::parse(row.try_get("name")?).map_err(corrupt)?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

fn demo_from(row: &SqliteRow) -> Result<Demo> {
    Ok(Demo {
        id: DemoId::parse(row.try_get("id")?).map_err(corrupt)?,
        vendor_id: VendorId::parse(row.try_get("vendor_id")?).map_err(corrupt)?,
        spec: serde_json::from_str(row.try_get("spec")?).map_err(corrupt)?,
        enabled: row.try_get("enabled")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
    })
}

fn sandbox_from(row: &SqliteRow) -> Result<Sandbox> {
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
    })
}

fn ids_from(rows: Vec<SqliteRow>) -> Result<Vec<SandboxId>> {
    rows.iter()
        .map(|r| SandboxId::parse(r.try_get("id")?).map_err(corrupt))
        .collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn instance_id(&self) -> Result<String> {
        Ok(
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'instance'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn insert_vendor(&self, vendor: &Vendor, key: TokenHash) -> Result<()> {
        sqlx::query("INSERT INTO vendors (id, name, key_hash, created_at) VALUES (?, ?, ?, ?)")
            .bind(vendor.id.to_string())
            .bind(vendor.name.as_str())
            .bind(key.to_hex())
            .bind(vendor.created_at.millis())
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_on_unique(e, "a vendor with this name exists"))?;
        Ok(())
    }

    async fn vendors(&self) -> Result<Vec<Vendor>> {
        sqlx::query("SELECT id, name, created_at FROM vendors ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(vendor_from)
            .collect()
    }

    async fn vendor(&self, id: VendorId) -> Result<Option<Vendor>> {
        sqlx::query("SELECT id, name, created_at FROM vendors WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(vendor_from)
            .transpose()
    }

    async fn vendor_by_name(&self, name: &str) -> Result<Option<Vendor>> {
        sqlx::query("SELECT id, name, created_at FROM vendors WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(vendor_from)
            .transpose()
    }

    async fn vendor_key(&self, id: VendorId) -> Result<Option<TokenHash>> {
        let hex: Option<String> = sqlx::query_scalar("SELECT key_hash FROM vendors WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        hex.map(|h| TokenHash::from_hex(&h).ok_or_else(|| corrupt("vendor key hash")))
            .transpose()
    }

    async fn insert_demo(&self, demo: &Demo) -> Result<()> {
        sqlx::query(
            "INSERT INTO demos (id, vendor_id, slug, spec, enabled, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(demo.id.to_string())
        .bind(demo.vendor_id.to_string())
        .bind(demo.spec.slug.as_str())
        .bind(serde_json::to_string(&demo.spec).map_err(corrupt)?)
        .bind(demo.enabled)
        .bind(demo.created_at.millis())
        .bind(demo.updated_at.millis())
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_on_unique(e, "this vendor already has a demo with this slug"))?;
        Ok(())
    }

    async fn demo(&self, id: DemoId) -> Result<Option<Demo>> {
        sqlx::query("SELECT * FROM demos WHERE id = ? AND deleted_at IS NULL")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(demo_from)
            .transpose()
    }

    async fn demos(&self, vendor: Option<VendorId>) -> Result<Vec<Demo>> {
        let mut q = QueryBuilder::new("SELECT * FROM demos WHERE deleted_at IS NULL");
        if let Some(vendor) = vendor {
            q.push(" AND vendor_id = ").push_bind(vendor.to_string());
        }
        q.push(" ORDER BY id");
        q.build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(demo_from)
            .collect()
    }

    async fn update_demo(&self, demo: &Demo) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE demos SET spec = ?, enabled = ?, updated_at = ?
             WHERE id = ? AND deleted_at IS NULL",
        )
        .bind(serde_json::to_string(&demo.spec).map_err(corrupt)?)
        .bind(demo.enabled)
        .bind(demo.updated_at.millis())
        .bind(demo.id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_demo(&self, id: DemoId, at: Timestamp) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE demos SET deleted_at = ?, enabled = 0 WHERE id = ? AND deleted_at IS NULL",
        )
        .bind(at.millis())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn catalog(&self) -> Result<Vec<(Demo, String)>> {
        let rows = sqlx::query(
            "SELECT demos.*, vendors.name AS vendor_name FROM demos
             JOIN vendors ON vendors.id = demos.vendor_id
             WHERE demos.deleted_at IS NULL AND demos.enabled = 1
             ORDER BY vendors.name, demos.slug",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((demo_from(row)?, row.try_get("vendor_name")?)))
            .collect()
    }

    async fn insert_sandbox(&self, s: &NewSandbox, capacity: Capacity) -> Result<()> {
        let per_demo = capacity.per_demo.map_or(i64::MAX, i64::from);
        let done = sqlx::query(concat!(
            "INSERT INTO sandboxes (id, demo_id, vendor_id, token_hash, status, spec, created_at,
                                    expires_at, files, prospect, idle_ms, profiles, addr_slot)
             SELECT ?1, ?2, ?3, ?4, 'provisioning', ?5, ?6, ?7, ?8, ?9, ?10, ?14,
                    (SELECT MIN(free) FROM (",
            held_slots!(),
            "))
             WHERE (SELECT COUNT(*) FROM sandboxes WHERE ",
            running!(),
            ") < ?11
               AND (SELECT COUNT(*) FROM sandboxes WHERE status IN ",
            live!(),
            ") < ?12
               AND (SELECT COUNT(*) FROM sandboxes WHERE demo_id = ?2 AND status IN ",
            live!(),
            ") < ?13"
        ))
        .bind(s.id.to_string())
        .bind(s.demo_id.to_string())
        .bind(s.vendor_id.to_string())
        .bind(s.token_hash.to_hex())
        .bind(serde_json::to_string(&s.spec).map_err(corrupt)?)
        .bind(s.created_at.millis())
        .bind(s.expires_at.millis())
        .bind(serde_json::to_string(&s.files).map_err(corrupt)?)
        .bind(serde_json::to_string(&s.prospect).map_err(corrupt)?)
        .bind(s.spec.trial.idle_seconds.map(|secs| i64::from(secs) * 1000))
        .bind(i64::from(capacity.running))
        .bind(i64::from(capacity.live))
        .bind(per_demo)
        .bind(serde_json::to_string(&s.profiles).map_err(corrupt)?)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        let all = self.count_live_by_state(None).await?;
        let demo = self.count_live_by_state(Some(s.demo_id)).await?;
        Err(StoreError::Capacity(
            if all.running >= u64::from(capacity.running) {
                format!("all {} running places are taken", capacity.running)
            } else if all.total() >= u64::from(capacity.live) {
                format!(
                    "{} sandboxes are live (running or asleep), the most there may be",
                    capacity.live
                )
            } else {
                format!(
                    "this demo allows {} sandboxes at once and has {}",
                    per_demo,
                    demo.total()
                )
            },
        ))
    }

    async fn sandbox(&self, id: SandboxId) -> Result<Option<Sandbox>> {
        sqlx::query("SELECT * FROM sandboxes WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(sandbox_from)
            .transpose()
    }

    async fn sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<Sandbox>> {
        let mut q = QueryBuilder::new("SELECT * FROM sandboxes WHERE 1 = 1");
        if let Some(vendor) = filter.vendor {
            q.push(" AND vendor_id = ").push_bind(vendor.to_string());
        }
        if let Some(demo) = filter.demo {
            q.push(" AND demo_id = ").push_bind(demo.to_string());
        }
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(since) = filter.ended_since {
            q.push(" AND (ended_at IS NULL OR ended_at >= ")
                .push_bind(since.millis())
                .push(")");
        }
        q.push(" ORDER BY id DESC LIMIT 1000");
        q.build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(sandbox_from)
            .collect()
    }

    async fn count_live_by_state(&self, demo: Option<DemoId>) -> Result<LiveCounts> {
        let row = sqlx::query(concat!(
            "SELECT COALESCE(SUM(",
            running!(),
            "), 0) AS running,
                    COALESCE(SUM(status = 'sleeping' AND waking_since IS NULL), 0) AS sleeping
             FROM sandboxes WHERE status IN ",
            live!(),
            " AND (?1 IS NULL OR demo_id = ?1)"
        ))
        .bind(demo.map(|d| d.to_string()))
        .fetch_one(&self.pool)
        .await?;
        Ok(LiveCounts {
            running: row.try_get::<i64, _>("running")? as u64,
            sleeping: row.try_get::<i64, _>("sleeping")? as u64,
        })
    }

    async fn mark_ready(&self, id: SandboxId, at: Timestamp, addr: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sandboxes SET status = 'ready', ready_at = ?, container_addr = ?
             WHERE id = ? AND status = 'provisioning'",
        )
        .bind(at.millis())
        .bind(addr)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_deadline(&self, id: SandboxId, expires_at: Timestamp) -> Result<bool> {
        let done = sqlx::query(concat!(
            "UPDATE sandboxes SET expires_at = ? WHERE id = ? AND status IN ",
            live!(),
            ""
        ))
        .bind(expires_at.millis())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn end(&self, id: SandboxId, at: Timestamp, reason: EndReason) -> Result<bool> {
        let done = sqlx::query(concat!(
            "UPDATE sandboxes SET status = ?, end_reason = ?, ended_at = ?, waking_since = NULL
             WHERE id = ? AND status IN ",
            live!(),
            ""
        ))
        .bind(reason.final_status().as_str())
        .bind(reason.as_str())
        .bind(at.millis())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn end_due(&self, now: Timestamp) -> Result<Vec<SandboxId>> {
        let rows = sqlx::query(concat!(
            "UPDATE sandboxes SET status = 'ended', end_reason = 'expired', ended_at = ?1,
                 waking_since = NULL
             WHERE status IN ",
            live!(),
            " AND expires_at <= ?1
             RETURNING id"
        ))
        .bind(now.millis())
        .fetch_all(&self.pool)
        .await?;
        ids_from(rows)
    }

    async fn next_deadline(&self) -> Result<Option<Timestamp>> {
        let next: Option<i64> = sqlx::query_scalar(concat!(
            "SELECT MIN(expires_at) FROM sandboxes WHERE status IN ",
            live!(),
            ""
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok(ts(next))
    }

    async fn sleep_due(&self, now: Timestamp) -> Result<Vec<SandboxId>> {
        let rows = sqlx::query(
            "UPDATE sandboxes SET status = 'sleeping'
             WHERE status = 'ready' AND idle_ms IS NOT NULL
               AND COALESCE(last_active_at, ready_at) + idle_ms <= ?
             RETURNING id",
        )
        .bind(now.millis())
        .fetch_all(&self.pool)
        .await?;
        ids_from(rows)
    }

    async fn next_idle(&self) -> Result<Option<Timestamp>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(COALESCE(last_active_at, ready_at) + idle_ms) FROM sandboxes
             WHERE status = 'ready' AND idle_ms IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(ts(next))
    }

    async fn mark_asleep(&self, id: SandboxId) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sandboxes SET status = 'sleeping' WHERE id = ? AND status = 'ready'",
        )
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn reserve_wake(&self, id: SandboxId, at: Timestamp, max_running: u32) -> Result<Wake> {
        let done = sqlx::query(concat!(
            "UPDATE sandboxes SET waking_since = ?1
             WHERE id = ?2 AND status = 'sleeping' AND waking_since IS NULL
               AND (SELECT COUNT(*) FROM sandboxes WHERE ",
            running!(),
            ") < ?3"
        ))
        .bind(at.millis())
        .bind(id.to_string())
        .bind(i64::from(max_running))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Wake::Reserved);
        }
        let asleep: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM sandboxes WHERE id = ? AND status = 'sleeping' AND waking_since IS NULL",
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
        sqlx::query("UPDATE sandboxes SET waking_since = NULL WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn release_all_wakes(&self) -> Result<()> {
        sqlx::query("UPDATE sandboxes SET waking_since = NULL WHERE waking_since IS NOT NULL")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn mark_awake(&self, id: SandboxId, at: Timestamp) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sandboxes SET status = 'ready', waking_since = NULL,
                 last_active_at = MAX(COALESCE(last_active_at, 0), ?)
             WHERE id = ? AND status = 'sleeping'",
        )
        .bind(at.millis())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn mark_data_deleted(&self, id: SandboxId, at: Timestamp) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sandboxes SET data_deleted_at = ?, container_addr = NULL
             WHERE id = ? AND data_deleted_at IS NULL",
        )
        .bind(at.millis())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn pending_teardowns(&self) -> Result<Vec<SandboxId>> {
        let rows = sqlx::query(
            "SELECT id FROM sandboxes
             WHERE data_deleted_at IS NULL AND status IN ('ended', 'failed')
             ORDER BY ended_at",
        )
        .fetch_all(&self.pool)
        .await?;
        ids_from(rows)
    }

    async fn ids_with_status(&self, status: SandboxStatus) -> Result<Vec<SandboxId>> {
        let rows = sqlx::query("SELECT id FROM sandboxes WHERE status = ?")
            .bind(status.as_str())
            .fetch_all(&self.pool)
            .await?;
        ids_from(rows)
    }

    async fn ends_without_event(&self) -> Result<Vec<SandboxId>> {
        let rows = sqlx::query(
            "SELECT id FROM sandboxes s
             WHERE end_reason IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM sandbox_events e
                               WHERE e.sandbox_id = s.id AND e.kind = s.end_reason)",
        )
        .fetch_all(&self.pool)
        .await?;
        ids_from(rows)
    }

    async fn add_event(
        &self,
        id: SandboxId,
        at: Timestamp,
        kind: &str,
        detail: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO sandbox_events (sandbox_id, at, kind, detail) VALUES (?, ?, ?, ?)",
        )
        .bind(id.to_string())
        .bind(at.millis())
        .bind(kind)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn events(&self, id: SandboxId) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT at, kind, detail FROM sandbox_events WHERE sandbox_id = ? ORDER BY seq",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    at: Timestamp::from_millis(r.try_get("at")?),
                    kind: r.try_get("kind")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    async fn vendor_webhook(&self, vendor: VendorId) -> Result<Option<(String, String)>> {
        let row = sqlx::query(
            "SELECT webhook_url, webhook_secret FROM vendors
             WHERE id = ? AND webhook_url IS NOT NULL AND webhook_secret IS NOT NULL",
        )
        .bind(vendor.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("webhook_url")?, r.try_get("webhook_secret")?)))
            .transpose()
    }

    async fn set_vendor_webhook(
        &self,
        vendor: VendorId,
        url: Option<&str>,
        new_secret: &str,
    ) -> Result<bool> {
        let row = sqlx::query(
            "UPDATE vendors SET webhook_url = ?2,
                 webhook_secret = COALESCE(webhook_secret, ?3)
             WHERE id = ?1
             RETURNING webhook_secret = ?3 AS fresh",
        )
        .bind(vendor.to_string())
        .bind(url)
        .bind(new_secret)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| r.try_get::<bool, _>("fresh"))
            .transpose()?
            .unwrap_or(false))
    }

    async fn add_event_with_delivery(
        &self,
        id: SandboxId,
        at: Timestamp,
        kind: &str,
        detail: Option<&str>,
        delivery: &NewDelivery,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sandbox_events (sandbox_id, at, kind, detail) VALUES (?, ?, ?, ?)",
        )
        .bind(id.to_string())
        .bind(at.millis())
        .bind(kind)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO webhook_deliveries
                 (id, vendor_id, sandbox_id, type, body, created_at, next_attempt_at)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?6 FROM vendors
             WHERE id = ?2 AND webhook_url IS NOT NULL",
        )
        .bind(&delivery.id)
        .bind(delivery.vendor_id.to_string())
        .bind(id.to_string())
        .bind(&delivery.kind)
        .bind(&delivery.body)
        .bind(at.millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "UPDATE webhook_deliveries SET lease_until = ?2
             WHERE seq IN (
                 SELECT d.seq FROM webhook_deliveries d
                 WHERE d.delivered_at IS NULL AND d.abandoned_at IS NULL
                   AND d.next_attempt_at <= ?1
                   AND (d.lease_until IS NULL OR d.lease_until <= ?1)
                   AND d.seq = (SELECT MIN(p.seq) FROM webhook_deliveries p
                                WHERE p.sandbox_id = d.sandbox_id
                                  AND p.delivered_at IS NULL AND p.abandoned_at IS NULL)
                 ORDER BY d.seq LIMIT ?3)
             RETURNING seq, id, vendor_id, sandbox_id, type, body, attempts, created_at",
        )
        .bind(now.millis())
        .bind(lease_until.millis())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut claimed: Vec<Delivery> = rows
            .iter()
            .map(|r| {
                Ok(Delivery {
                    seq: r.try_get("seq")?,
                    id: r.try_get("id")?,
                    vendor_id: VendorId::parse(r.try_get("vendor_id")?).map_err(corrupt)?,
                    sandbox_id: SandboxId::parse(r.try_get("sandbox_id")?).map_err(corrupt)?,
                    kind: r.try_get("type")?,
                    body: r.try_get("body")?,
                    attempts: r.try_get::<i64, _>("attempts")? as u32,
                    created_at: Timestamp::from_millis(r.try_get("created_at")?),
                })
            })
            .collect::<Result<_>>()?;
        claimed.sort_by_key(|d| d.seq);
        Ok(claimed)
    }

    async fn record_attempt(&self, seq: i64, attempt: &Attempt) -> Result<()> {
        let (delivered, retry, abandoned) = match attempt.next {
            AttemptOutcome::Delivered => (Some(attempt.at.millis()), None, None),
            AttemptOutcome::RetryAt(at) => (None, Some(at.millis()), None),
            AttemptOutcome::Abandoned => (None, None, Some(attempt.at.millis())),
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_until = NULL,
                 last_attempt_at = ?2, last_status = ?3, last_error = ?4,
                 delivered_at = ?5, next_attempt_at = COALESCE(?6, next_attempt_at),
                 abandoned_at = ?7
             WHERE seq = ?1",
        )
        .bind(seq)
        .bind(attempt.at.millis())
        .bind(attempt.status.map(i64::from))
        .bind(attempt.error.as_deref())
        .bind(delivered)
        .bind(retry)
        .bind(abandoned)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_delivery_leases(&self) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn next_delivery_at(&self) -> Result<Option<Timestamp>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, 0))) FROM webhook_deliveries
             WHERE delivered_at IS NULL AND abandoned_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(next.map(Timestamp::from_millis))
    }

    async fn deliveries(&self, vendor: VendorId, limit: u32) -> Result<Vec<DeliveryRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM webhook_deliveries WHERE vendor_id = ? ORDER BY seq DESC LIMIT ?",
        )
        .bind(vendor.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let pending = r.try_get::<Option<i64>, _>("delivered_at")?.is_none()
                    && r.try_get::<Option<i64>, _>("abandoned_at")?.is_none();
                Ok(DeliveryRecord {
                    id: r.try_get("id")?,
                    kind: r.try_get("type")?,
                    sandbox_id: SandboxId::parse(r.try_get("sandbox_id")?).map_err(corrupt)?,
                    created_at: Timestamp::from_millis(r.try_get("created_at")?),
                    attempts: r.try_get::<i64, _>("attempts")? as u32,
                    last_attempt_at: ts(r.try_get("last_attempt_at")?),
                    last_status: r
                        .try_get::<Option<i64>, _>("last_status")?
                        .map(|s| s as u16),
                    last_error: r.try_get("last_error")?,
                    next_attempt_at: if pending {
                        ts(r.try_get("next_attempt_at")?)
                    } else {
                        None
                    },
                    delivered_at: ts(r.try_get("delivered_at")?),
                    abandoned_at: ts(r.try_get("abandoned_at")?),
                })
            })
            .collect()
    }

    async fn insert_warm(&self, member: &NewWarmMember) -> Result<()> {
        sqlx::query(concat!(
            "INSERT INTO warm_members (id, demo_id, spec, state, addr_slot, created_at)
             SELECT ?1, ?2, ?3, 'warming', (SELECT MIN(free) FROM (",
            held_slots!(),
            ")), ?4"
        ))
        .bind(member.id.to_string())
        .bind(member.demo_id.to_string())
        .bind(serde_json::to_string(&member.spec).map_err(corrupt)?)
        .bind(member.created_at.millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn warm_members(&self, demo: Option<DemoId>) -> Result<Vec<WarmMember>> {
        sqlx::query(
            "SELECT * FROM warm_members WHERE ?1 IS NULL OR demo_id = ?1 ORDER BY created_at",
        )
        .bind(demo.map(|d| d.to_string()))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(warm_from)
        .collect()
    }

    async fn warm_member(&self, id: SandboxId) -> Result<Option<WarmMember>> {
        sqlx::query("SELECT * FROM warm_members WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(warm_from)
            .transpose()
    }

    async fn set_warm_state(
        &self,
        id: SandboxId,
        from: &[WarmState],
        to: WarmState,
    ) -> Result<bool> {
        let mut q = QueryBuilder::new("UPDATE warm_members SET state = ");
        q.push_bind(to.as_str())
            .push(" WHERE id = ")
            .push_bind(id.to_string())
            .push(" AND state IN (");
        let mut states = q.separated(", ");
        for state in from {
            states.push_bind(state.as_str());
        }
        q.push(")");
        Ok(q.build().execute(&self.pool).await?.rows_affected() == 1)
    }

    async fn forget_warm(&self, id: SandboxId) -> Result<()> {
        sqlx::query("DELETE FROM warm_members WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn claim_warm(&self, s: &NewSandbox, capacity: Capacity) -> Result<bool> {
        let spec = serde_json::to_string(&s.spec).map_err(corrupt)?;
        let mut tx = self.pool.begin().await?;
        let slot: Option<i64> = sqlx::query_scalar(
            "DELETE FROM warm_members
             WHERE id = ? AND demo_id = ? AND spec = ? AND state = 'warm'
             RETURNING addr_slot",
        )
        .bind(s.id.to_string())
        .bind(s.demo_id.to_string())
        .bind(&spec)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(slot) = slot else {
            // Taken by another prospect, or drained, meanwhile.
            return Ok(false);
        };
        // The member already holds a running place: only the prospects' own limits apply.
        let per_demo = capacity.per_demo.map_or(i64::MAX, i64::from);
        let done = sqlx::query(concat!(
            "INSERT INTO sandboxes (id, demo_id, vendor_id, token_hash, status, spec, created_at,
                                    expires_at, files, prospect, idle_ms, addr_slot, profiles)
             SELECT ?1, ?2, ?3, ?4, 'provisioning', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?14
             WHERE (SELECT COUNT(*) FROM sandboxes WHERE status IN ",
            live!(),
            ") < ?12
               AND (SELECT COUNT(*) FROM sandboxes WHERE demo_id = ?2 AND status IN ",
            live!(),
            ") < ?13"
        ))
        .bind(s.id.to_string())
        .bind(s.demo_id.to_string())
        .bind(s.vendor_id.to_string())
        .bind(s.token_hash.to_hex())
        .bind(&spec)
        .bind(s.created_at.millis())
        .bind(s.expires_at.millis())
        .bind(serde_json::to_string(&s.files).map_err(corrupt)?)
        .bind(serde_json::to_string(&s.prospect).map_err(corrupt)?)
        .bind(s.spec.trial.idle_seconds.map(|secs| i64::from(secs) * 1000))
        .bind(slot)
        .bind(i64::from(capacity.live))
        .bind(per_demo)
        .bind(serde_json::to_string(&s.profiles).map_err(corrupt)?)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            // The member stays in the pool.
            return Err(StoreError::Capacity(format!(
                "the most sandboxes there may be are live, or this demo allows {} at once",
                capacity
                    .per_demo
                    .map_or("no more".to_string(), |n| n.to_string())
            )));
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn recent_events(
        &self,
        vendor: Option<VendorId>,
        limit: u32,
    ) -> Result<Vec<(SandboxId, Event)>> {
        let rows = sqlx::query(
            "SELECT e.sandbox_id, e.at, e.kind, e.detail FROM sandbox_events e
             JOIN sandboxes s ON s.id = e.sandbox_id
             WHERE ?1 IS NULL OR s.vendor_id = ?1
             ORDER BY e.seq DESC LIMIT ?2",
        )
        .bind(vendor.map(|v| v.to_string()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("sandbox_id")?;
                let id = SandboxId::parse(&id)
                    .map_err(|_| StoreError::Corrupt(format!("sandbox id {id:?}")))?;
                let event = Event {
                    at: Timestamp::from_millis(r.try_get("at")?),
                    kind: r.try_get("kind")?,
                    detail: r.try_get("detail")?,
                };
                Ok((id, event))
            })
            .collect()
    }

    async fn add_usage(&self, batch: &[Usage]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for usage in batch {
            // Active time: the batch's own span, plus the gap since the last request before
            // it when that was less than five minutes.
            sqlx::query(
                "UPDATE sandboxes SET requests = requests + ?1,
                     active_ms = active_ms + (?3 - ?2)
                         + CASE WHEN last_active_at IS NOT NULL AND ?2 >= last_active_at
                                     AND ?2 - last_active_at < 300000
                                THEN ?2 - last_active_at ELSE 0 END,
                     first_opened_at = COALESCE(first_opened_at, ?2),
                     last_active_at = MAX(COALESCE(last_active_at, 0), ?3)
                 WHERE id = ?4",
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::token::IssuedToken;
    use crate::domain::{DemoManifest, DemoSpec, Policy, Prospect};

    fn cap(running: u32) -> Capacity {
        Capacity {
            running,
            live: running,
            per_demo: None,
        }
    }

    async fn store() -> SqliteStore {
        SqliteStore::connect("sqlite::memory:").await.unwrap()
    }

    fn spec(slug: &str) -> DemoSpec {
        let manifest: DemoManifest = serde_json::from_value(serde_json::json!({
            "slug": slug, "title": "T", "image": "img:1", "port": 80, "data_path": "/data"
        }))
        .unwrap();
        DemoSpec::parse(manifest, &Policy::default()).unwrap()
    }

    async fn vendor_and_demo(store: &SqliteStore) -> (Vendor, Demo) {
        let vendor = Vendor {
            id: VendorId::new(),
            name: VendorName::parse("Acme").unwrap(),
            created_at: Timestamp::now(),
        };
        store
            .insert_vendor(&vendor, TokenHash::of("k"))
            .await
            .unwrap();
        let demo = Demo {
            id: DemoId::new(),
            vendor_id: vendor.id,
            spec: spec("one"),
            enabled: true,
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
        };
        store.insert_demo(&demo).await.unwrap();
        (vendor, demo)
    }

    fn new_sandbox(demo: &Demo, expires_at: Timestamp) -> NewSandbox {
        let id = SandboxId::new();
        NewSandbox {
            id,
            demo_id: demo.id,
            vendor_id: demo.vendor_id,
            token_hash: IssuedToken::for_sandbox(id).hash(),
            spec: demo.spec.clone(),
            created_at: Timestamp::from_millis(0),
            expires_at,
            files: vec![],
            profiles: vec![],
            prospect: Prospect::default(),
        }
    }

    #[tokio::test]
    async fn names_and_slugs_are_unique() {
        let store = store().await;
        let (vendor, demo) = vendor_and_demo(&store).await;
        let again = Vendor {
            id: VendorId::new(),
            ..vendor.clone()
        };
        assert!(matches!(
            store.insert_vendor(&again, TokenHash::of("x")).await,
            Err(StoreError::Conflict(_))
        ));
        let twin = Demo {
            id: DemoId::new(),
            ..demo.clone()
        };
        assert!(matches!(
            store.insert_demo(&twin).await,
            Err(StoreError::Conflict(_))
        ));
        // A deleted demo frees its slug.
        assert!(store.delete_demo(demo.id, Timestamp::now()).await.unwrap());
        store.insert_demo(&twin).await.unwrap();
        assert!(store.demo(demo.id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn capacity_is_checked_in_the_insert() {
        let store = store().await;
        let (_, demo) = vendor_and_demo(&store).await;
        let far = Timestamp::from_millis(i64::MAX / 2);
        store
            .insert_sandbox(&new_sandbox(&demo, far), cap(2))
            .await
            .unwrap();
        let second = new_sandbox(&demo, far);
        store.insert_sandbox(&second, cap(2)).await.unwrap();
        assert!(matches!(
            store.insert_sandbox(&new_sandbox(&demo, far), cap(2)).await,
            Err(StoreError::Capacity(_))
        ));
        // An ended sandbox frees its place.
        assert!(
            store
                .end(second.id, Timestamp::now(), EndReason::EndedByProspect)
                .await
                .unwrap()
        );
        store
            .insert_sandbox(&new_sandbox(&demo, far), cap(2))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_sandbox_ends_once_and_deadlines_are_claimed_once() {
        let store = store().await;
        let (_, demo) = vendor_and_demo(&store).await;
        let early = new_sandbox(&demo, Timestamp::from_millis(1_000));
        let late = new_sandbox(&demo, Timestamp::from_millis(5_000));
        store.insert_sandbox(&early, cap(10)).await.unwrap();
        store.insert_sandbox(&late, cap(10)).await.unwrap();

        assert_eq!(
            store.next_deadline().await.unwrap(),
            Some(Timestamp::from_millis(1_000))
        );
        assert_eq!(
            store.end_due(Timestamp::from_millis(2_000)).await.unwrap(),
            vec![early.id]
        );
        assert!(
            store
                .end_due(Timestamp::from_millis(2_000))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.next_deadline().await.unwrap(),
            Some(Timestamp::from_millis(5_000))
        );
        assert!(
            !store
                .end(early.id, Timestamp::now(), EndReason::EndedByAdmin)
                .await
                .unwrap()
        );
        let ended = store.sandbox(early.id).await.unwrap().unwrap();
        assert_eq!(ended.status, SandboxStatus::Ended);
        assert_eq!(ended.end_reason, Some(EndReason::Expired));
        assert!(
            !store
                .mark_ready(early.id, Timestamp::now(), "x")
                .await
                .unwrap()
        );
        assert!(
            !store
                .set_deadline(early.id, Timestamp::from_millis(9_000))
                .await
                .unwrap()
        );

        assert_eq!(store.pending_teardowns().await.unwrap(), vec![early.id]);
        store
            .mark_data_deleted(early.id, Timestamp::now())
            .await
            .unwrap();
        assert!(store.pending_teardowns().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn address_slots_are_held_until_the_data_is_deleted() {
        let store = store().await;
        let (_, demo) = vendor_and_demo(&store).await;
        let far = Timestamp::from_millis(i64::MAX / 2);
        let mut ids = Vec::new();
        for _ in 0..3 {
            let s = new_sandbox(&demo, far);
            store.insert_sandbox(&s, cap(10)).await.unwrap();
            ids.push(s.id);
        }
        let slot = |id| {
            let store = store.clone();
            async move { store.sandbox(id).await.unwrap().unwrap().addr_slot }
        };
        assert_eq!(slot(ids[0]).await, Some(0));
        assert_eq!(slot(ids[1]).await, Some(1));
        assert_eq!(slot(ids[2]).await, Some(2));

        // Ended is not enough: the slot frees only once the objects are gone.
        store
            .end(ids[1], Timestamp::now(), EndReason::Failed)
            .await
            .unwrap();
        let next = new_sandbox(&demo, far);
        store.insert_sandbox(&next, cap(10)).await.unwrap();
        assert_eq!(slot(next.id).await, Some(3));
        store
            .mark_data_deleted(ids[1], Timestamp::now())
            .await
            .unwrap();
        let reuse = new_sandbox(&demo, far);
        store.insert_sandbox(&reuse, cap(10)).await.unwrap();
        assert_eq!(slot(reuse.id).await, Some(1));
    }

    #[tokio::test]
    async fn sleeping_sandboxes_count_apart_and_per_demo_caps_hold() {
        let store = store().await;
        let (_, demo) = vendor_and_demo(&store).await;
        let far = Timestamp::from_millis(i64::MAX / 2);
        let asleep = new_sandbox(&demo, far);
        store.insert_sandbox(&asleep, cap(1)).await.unwrap();
        store
            .mark_ready(asleep.id, Timestamp::from_millis(0), "x")
            .await
            .unwrap();
        sqlx::query("UPDATE sandboxes SET status = 'sleeping'")
            .execute(&store.pool)
            .await
            .unwrap();
        // One running place: the sleeping sandbox does not take it…
        let roomy = Capacity {
            running: 1,
            live: 2,
            per_demo: None,
        };
        store
            .insert_sandbox(&new_sandbox(&demo, far), roomy)
            .await
            .unwrap();
        let counts = store.count_live_by_state(Some(demo.id)).await.unwrap();
        assert_eq!((counts.running, counts.sleeping), (1, 1));
        // …but it does count as live, and against the demo's own cap.
        let another = new_sandbox(&demo, far);
        let full = |c| store.insert_sandbox(&another, c);
        let err = full(Capacity {
            running: 5,
            live: 2,
            per_demo: None,
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("live"), "{err}");
        let err = full(Capacity {
            running: 5,
            live: 5,
            per_demo: Some(2),
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("this demo allows 2"), "{err}");
    }

    #[tokio::test]
    async fn idle_sandboxes_fall_asleep_and_wake() {
        let store = store().await;
        let (_, mut demo) = vendor_and_demo(&store).await;
        demo.spec.trial.idle_seconds = Some(10);
        let far = Timestamp::from_millis(i64::MAX / 2);
        let s = new_sandbox(&demo, far);
        store.insert_sandbox(&s, cap(5)).await.unwrap();
        // Not ready yet: nothing to put to sleep.
        assert_eq!(store.next_idle().await.unwrap(), None);
        store
            .mark_ready(s.id, Timestamp::from_millis(1_000), "x")
            .await
            .unwrap();
        assert_eq!(
            store.next_idle().await.unwrap(),
            Some(Timestamp::from_millis(11_000))
        );
        // Activity pushes the moment back.
        store
            .add_usage(&[Usage {
                sandbox: s.id,
                requests: 1,
                first_active_at: Timestamp::from_millis(5_000),
                last_active_at: Timestamp::from_millis(5_000),
            }])
            .await
            .unwrap();
        assert!(
            store
                .sleep_due(Timestamp::from_millis(11_000))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .sleep_due(Timestamp::from_millis(15_000))
                .await
                .unwrap(),
            vec![s.id]
        );
        assert_eq!(store.next_idle().await.unwrap(), None);
        // Waking takes a running place first, atomically: with one place, a second
        // sandbox can be neither woken nor made while this one wakes.
        assert_eq!(
            store
                .reserve_wake(s.id, Timestamp::from_millis(19_000), 1)
                .await
                .unwrap(),
            Wake::Reserved
        );
        assert_eq!(
            store
                .reserve_wake(s.id, Timestamp::from_millis(19_000), 1)
                .await
                .unwrap(),
            Wake::NotSleeping
        );
        let counts = store.count_live_by_state(None).await.unwrap();
        assert_eq!((counts.running, counts.sleeping), (1, 0));
        assert!(matches!(
            store.insert_sandbox(&new_sandbox(&demo, far), cap(1)).await,
            Err(StoreError::Capacity(_))
        ));
        assert!(
            store
                .mark_awake(s.id, Timestamp::from_millis(20_000))
                .await
                .unwrap()
        );
        assert!(
            !store
                .mark_awake(s.id, Timestamp::from_millis(20_000))
                .await
                .unwrap()
        );
        assert_eq!(
            store.next_idle().await.unwrap(),
            Some(Timestamp::from_millis(30_000))
        );
    }

    #[tokio::test]
    async fn usage_accumulates() {
        let store = store().await;
        let (_, demo) = vendor_and_demo(&store).await;
        let s = new_sandbox(&demo, Timestamp::from_millis(i64::MAX / 2));
        store.insert_sandbox(&s, cap(10)).await.unwrap();
        let batch = |n, at| Usage {
            sandbox: s.id,
            requests: n,
            first_active_at: Timestamp::from_millis(at),
            last_active_at: Timestamp::from_millis(at),
        };
        store.add_usage(&[batch(3, 50)]).await.unwrap();
        store.add_usage(&[batch(2, 40)]).await.unwrap();
        let read = store.sandbox(s.id).await.unwrap().unwrap();
        assert_eq!(read.requests, 5);
        assert_eq!(read.last_active_at, Some(Timestamp::from_millis(50)));
        assert_eq!(read.first_opened_at, Some(Timestamp::from_millis(50)));
    }

    #[tokio::test]
    async fn an_end_without_its_event_is_found() {
        let store = store().await;
        let (_, demo) = vendor_and_demo(&store).await;
        let s = new_sandbox(&demo, Timestamp::from_millis(i64::MAX / 2));
        store.insert_sandbox(&s, cap(10)).await.unwrap();
        assert!(store.ends_without_event().await.unwrap().is_empty(), "live");
        let at = Timestamp::from_millis(9);
        assert!(store.end(s.id, at, EndReason::EndedByAdmin).await.unwrap());
        assert_eq!(store.ends_without_event().await.unwrap(), [s.id]);
        store
            .add_event(s.id, at, "ended_by_admin", None)
            .await
            .unwrap();
        assert!(store.ends_without_event().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn active_time_counts_spans_between_close_requests() {
        let store = store().await;
        let (_, demo) = vendor_and_demo(&store).await;
        let s = new_sandbox(&demo, Timestamp::from_millis(i64::MAX / 2));
        store.insert_sandbox(&s, cap(10)).await.unwrap();
        let batch = |first, last| Usage {
            sandbox: s.id,
            requests: 1,
            first_active_at: Timestamp::from_millis(first),
            last_active_at: Timestamp::from_millis(last),
        };
        // 2 s of use; half a second later 0.5 s more (the gap counts); then, after more than
        // five minutes away, a single request (the gap does not count).
        for b in [
            batch(1_000, 3_000),
            batch(3_500, 4_000),
            batch(400_000, 400_000),
        ] {
            store.add_usage(&[b]).await.unwrap();
        }
        let read = store.sandbox(s.id).await.unwrap().unwrap();
        assert_eq!(read.active_ms, 3_000);
        assert_eq!(read.first_opened_at, Some(Timestamp::from_millis(1_000)));
    }
}
