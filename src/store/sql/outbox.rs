//! The webhook outbox: deliveries leased head-of-queue per sandbox, attempts recorded.

use async_trait::async_trait;
use sqlx::Row;

use super::{SqlStore, corrupt, ts};
use crate::domain::webhook::{Attempt, AttemptOutcome, Delivery, DeliveryRecord};
use crate::domain::{SandboxId, Timestamp, VendorId};
use crate::store::{OutboxStore, Result};

/// The deliveries due at `$1`, at most `$3`: only the oldest undelivered one of each
/// sandbox, so that each sandbox's are delivered in order.
macro_rules! claimable {
    () => {
        "SELECT d.seq FROM webhook_deliveries d
         WHERE d.delivered_at IS NULL AND d.abandoned_at IS NULL
           AND d.next_attempt_at <= $1
           AND (d.lease_until IS NULL OR d.lease_until <= $1)
           AND d.seq = (SELECT MIN(p.seq) FROM webhook_deliveries p
                        WHERE p.sandbox_id = d.sandbox_id
                          AND p.delivered_at IS NULL AND p.abandoned_at IS NULL)
         ORDER BY d.seq LIMIT $3"
    };
}

#[async_trait]
impl OutboxStore for SqlStore {
    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        // Any node may send any delivery, each one node: the lease is taken in one
        // statement. In Postgres the candidates are locked as they are chosen, skipping
        // those another node is taking (`FOR UPDATE SKIP LOCKED`); a candidate leased
        // meanwhile is re-checked against its new row and left out. SQLite has one writer.
        let rows = sqlx::query(self.dialect.pick(
            concat!(
                "UPDATE webhook_deliveries SET lease_until = $2, leased_by = $4
                 WHERE seq IN (",
                claimable!(),
                ")
                 RETURNING seq, id, vendor_id, sandbox_id, type, body, attempts, created_at"
            ),
            concat!(
                "UPDATE webhook_deliveries SET lease_until = $2, leased_by = $4
                 WHERE seq IN (",
                claimable!(),
                " FOR UPDATE SKIP LOCKED)
                   AND (lease_until IS NULL OR lease_until <= $1)
                 RETURNING seq, id, vendor_id, sandbox_id, type, body, attempts, created_at"
            ),
        ))
        .bind(now.millis())
        .bind(lease_until.millis())
        .bind(i64::from(limit))
        .bind(self.node.as_str())
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
        let query = sqlx::query(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_until = NULL,
                 leased_by = NULL, last_attempt_at = $2, last_status = $3, last_error = $4,
                 delivered_at = $5, next_attempt_at = COALESCE($6, next_attempt_at),
                 abandoned_at = $7
             WHERE seq = $1",
        )
        .bind(seq)
        .bind(attempt.at.millis())
        .bind(attempt.status.map(i64::from))
        .bind(attempt.error.as_deref())
        .bind(delivered)
        .bind(retry)
        .bind(abandoned);
        self.run(query).await
    }

    async fn release_delivery_leases(&self) -> Result<()> {
        // Only this node's: another node's leases are its deliveries under way.
        let query = sqlx::query(
            "UPDATE webhook_deliveries SET lease_until = NULL, leased_by = NULL
             WHERE lease_until IS NOT NULL AND leased_by = $1",
        )
        .bind(self.node.as_str());
        self.run(query).await
    }

    async fn next_delivery_at(&self) -> Result<Option<Timestamp>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(CASE WHEN COALESCE(lease_until, 0) > next_attempt_at
                            THEN lease_until ELSE next_attempt_at END)
             FROM webhook_deliveries
             WHERE delivered_at IS NULL AND abandoned_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(next.map(Timestamp::from_millis))
    }

    async fn deliveries(&self, vendor: VendorId, limit: u32) -> Result<Vec<DeliveryRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM webhook_deliveries WHERE vendor_id = $1 ORDER BY seq DESC LIMIT $2",
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
}
