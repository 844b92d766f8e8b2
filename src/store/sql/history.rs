//! A sandbox's history: events as JSON beside their kind, and with each one a vendor's webhook
//! announces, its delivery, in the same transaction. The deployment's own events
//! (`service_events`) beside them.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{SqlStore, corrupt, id_of, json};
use crate::domain::{
    EventRecord, SandboxEvent, SandboxId, ServiceEventRecord, Timestamp, VendorId,
};
use crate::store::{HistoryStore, NewEvent, Result};

fn record_from(row: &AnyRow) -> Result<EventRecord> {
    let data: String = row.try_get("data")?;
    Ok(EventRecord {
        at: Timestamp::from_millis(row.try_get("at")?),
        event: serde_json::from_str(&data)
            .map_err(|e| corrupt(format!("an event {data:?}: {e}")))?,
    })
}

impl SqlStore {
    /// Appends the event (unless the sandbox has `most` of its kind already: one statement
    /// counts and writes, under SQLite's write lock or, in Postgres, the sandbox's events'
    /// advisory lock) and its delivery, in one transaction.
    async fn append(&self, new: NewEvent<'_>, most: Option<u32>) -> Result<bool> {
        let (id, at, event) = (new.sandbox, new.at, new.event);
        let mut tx = self.pool.begin().await?;
        if most.is_some() {
            self.serialise(&mut tx, &[&format!("events:{id}")]).await?;
        }
        let appended = sqlx::query(
            "INSERT INTO sandbox_events (sandbox_id, at, kind, data)
             SELECT $1, $2, $3, $4
             WHERE $5 IS NULL
                OR (SELECT COUNT(*) FROM sandbox_events WHERE sandbox_id = $1 AND kind = $3) < $5",
        )
        .bind(id.to_string())
        .bind(at.millis())
        .bind(event.kind())
        .bind(json(event)?)
        .bind(most.map(i64::from))
        .execute(&mut *tx)
        .await?;
        if appended.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(delivery) = new.announce {
            sqlx::query(
                "INSERT INTO webhook_deliveries
                     (id, vendor_id, sandbox_id, type, body, created_at, next_attempt_at)
                 SELECT $1, $2, $3, $4, $5, $6, $6 FROM vendors
                 WHERE id = $2 AND webhook_url IS NOT NULL",
            )
            .bind(&delivery.id)
            .bind(delivery.vendor_id.to_string())
            .bind(id.to_string())
            .bind(&delivery.kind)
            .bind(&delivery.body)
            .bind(at.millis())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

#[async_trait]
impl HistoryStore for SqlStore {
    async fn append_event(&self, new: NewEvent<'_>) -> Result<()> {
        self.append(new, None).await.map(|_| ())
    }

    async fn append_event_within(&self, new: NewEvent<'_>, most: u32) -> Result<bool> {
        self.append(new, Some(most)).await
    }

    async fn history(&self, id: SandboxId) -> Result<Vec<EventRecord>> {
        let query =
            sqlx::query("SELECT at, data FROM sandbox_events WHERE sandbox_id = $1 ORDER BY seq")
                .bind(id.to_string());
        self.all(query, record_from).await
    }

    async fn recent_events(
        &self,
        vendor: Option<VendorId>,
        limit: u32,
    ) -> Result<Vec<(SandboxId, EventRecord)>> {
        let rows = sqlx::query(
            "SELECT e.sandbox_id, e.at, e.data FROM sandbox_events e
             JOIN sandboxes s ON s.id = e.sandbox_id
             WHERE $1 IS NULL OR s.vendor_id = $1
             ORDER BY e.seq DESC LIMIT $2",
        )
        .bind(vendor.map(|v| v.to_string()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id = SandboxId::parse(r.try_get("sandbox_id")?).map_err(corrupt)?;
                Ok((id, record_from(r)?))
            })
            .collect()
    }

    async fn ends_without_event(&self) -> Result<Vec<SandboxId>> {
        let [a, b, c, d, e] = SandboxEvent::end_kinds();
        let query = sqlx::query(
            "SELECT id FROM sandboxes s
             WHERE node = $6 AND end_reason IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM sandbox_events e
                               WHERE e.sandbox_id = s.id AND e.kind IN ($1, $2, $3, $4, $5))",
        )
        .bind(a)
        .bind(b)
        .bind(c)
        .bind(d)
        .bind(e)
        .bind(self.node.as_str());
        self.all(query, id_of).await
    }

    async fn append_service_event(&self, record: &ServiceEventRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO service_events (at, kind, vendor_id, data) VALUES ($1, $2, $3, $4)",
        )
        .bind(record.at.millis())
        .bind(record.event.kind())
        .bind(record.vendor.map(|v| v.to_string()))
        .bind(json(&record.event)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn recent_service_events(
        &self,
        vendor: Option<VendorId>,
        limit: u32,
    ) -> Result<Vec<ServiceEventRecord>> {
        let query = sqlx::query(
            "SELECT at, vendor_id, data FROM service_events
             WHERE $1 IS NULL OR vendor_id = $1
             ORDER BY seq DESC LIMIT $2",
        )
        .bind(vendor.map(|v| v.to_string()))
        .bind(i64::from(limit));
        self.all(query, |row| {
            let data: String = row.try_get("data")?;
            let vendor: Option<String> = row.try_get("vendor_id")?;
            Ok(ServiceEventRecord {
                at: Timestamp::from_millis(row.try_get("at")?),
                vendor: vendor
                    .map(|v| VendorId::parse(&v).map_err(corrupt))
                    .transpose()?,
                event: serde_json::from_str(&data)
                    .map_err(|e| corrupt(format!("a service event {data:?}: {e}")))?,
            })
        })
        .await
    }
}
