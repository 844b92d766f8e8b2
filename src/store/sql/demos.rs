//! Demos: each a vendor's checked manifest (`DemoSpec`, as JSON), enabled or not, soft-deleted.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{SqlStore, conflict_on_unique, corrupt, flag, json};
use crate::domain::{Demo, DemoId, ImageStatus, Timestamp, VendorId};
use crate::store::{DemoStore, Result};

fn demo_from(row: &AnyRow) -> Result<Demo> {
    Ok(Demo {
        id: DemoId::parse(row.try_get("id")?).map_err(corrupt)?,
        vendor_id: VendorId::parse(row.try_get("vendor_id")?).map_err(corrupt)?,
        spec: serde_json::from_str(row.try_get("spec")?).map_err(corrupt)?,
        enabled: flag(row, "enabled")?,
        image_status: {
            let raw: &str = row.try_get("image_status")?;
            ImageStatus::parse(raw).ok_or_else(|| corrupt(format!("image status {raw:?}")))?
        },
        image_error: row.try_get("image_error")?,
        image_digest: row.try_get("image_digest")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
    })
}

#[async_trait]
impl DemoStore for SqlStore {
    async fn insert_demo(&self, demo: &Demo) -> Result<()> {
        sqlx::query(
            "INSERT INTO demos (id, vendor_id, slug, spec, enabled, image_status, image_error,
                                image_digest, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(demo.id.to_string())
        .bind(demo.vendor_id.to_string())
        .bind(demo.spec.slug.as_str())
        .bind(json(&demo.spec)?)
        .bind(i64::from(demo.enabled))
        .bind(demo.image_status.as_str())
        .bind(&demo.image_error)
        .bind(&demo.image_digest)
        .bind(demo.created_at.millis())
        .bind(demo.updated_at.millis())
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_on_unique(e, "this vendor already has a demo with this slug"))?;
        Ok(())
    }

    async fn demo(&self, id: DemoId) -> Result<Option<Demo>> {
        let query = sqlx::query("SELECT * FROM demos WHERE id = $1 AND deleted_at IS NULL")
            .bind(id.to_string());
        self.one(query, demo_from).await
    }

    async fn demos(&self, vendor: Option<VendorId>) -> Result<Vec<Demo>> {
        let query = sqlx::query(
            "SELECT * FROM demos WHERE deleted_at IS NULL AND ($1 IS NULL OR vendor_id = $1)
             ORDER BY id",
        )
        .bind(vendor.map(|v| v.to_string()));
        self.all(query, demo_from).await
    }

    async fn update_demo(&self, demo: &Demo) -> Result<bool> {
        let query = sqlx::query(
            "UPDATE demos SET spec = $1, enabled = $2, updated_at = $3
             WHERE id = $4 AND deleted_at IS NULL",
        )
        .bind(json(&demo.spec)?)
        .bind(i64::from(demo.enabled))
        .bind(demo.updated_at.millis())
        .bind(demo.id.to_string());
        self.changed(query).await
    }

    async fn set_image_status(
        &self,
        id: DemoId,
        from: ImageStatus,
        to: ImageStatus,
    ) -> Result<bool> {
        let query = sqlx::query(
            "UPDATE demos SET image_status = $1
             WHERE id = $2 AND image_status = $3 AND deleted_at IS NULL",
        )
        .bind(to.as_str())
        .bind(id.to_string())
        .bind(from.as_str());
        self.changed(query).await
    }

    async fn start_pull(&self, id: DemoId) -> Result<bool> {
        let query = sqlx::query(
            "UPDATE demos SET image_status = 'pulling'
             WHERE id = $1 AND image_status != 'pulling' AND deleted_at IS NULL",
        )
        .bind(id.to_string());
        self.changed(query).await
    }

    async fn finish_pull(
        &self,
        id: DemoId,
        outcome: std::result::Result<&str, &str>,
    ) -> Result<bool> {
        let (status, digest, error) = match outcome {
            Ok(digest) => (ImageStatus::Ready, Some(digest), None),
            Err(error) => (ImageStatus::Failed, None, Some(error)),
        };
        // A failed pull keeps the digest of the last one that worked (for the record; the
        // demo takes no trial until a pull works again).
        let query = sqlx::query(
            "UPDATE demos SET image_status = $1, image_error = $2,
                              image_digest = COALESCE($3, image_digest)
             WHERE id = $4 AND image_status = 'pulling' AND deleted_at IS NULL",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(digest)
        .bind(id.to_string());
        self.changed(query).await
    }

    // Images are the Engine's: each node keeps its own list.
    async fn record_pulled_image(&self, reference: &str, at: Timestamp) -> Result<()> {
        let query = sqlx::query(
            "INSERT INTO pulled_images (node, reference, pulled_at) VALUES ($1, $2, $3)
             ON CONFLICT (node, reference) DO UPDATE SET pulled_at = excluded.pulled_at",
        )
        .bind(self.node.as_str())
        .bind(reference)
        .bind(at.millis());
        self.run(query).await
    }

    async fn pulled_images(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT reference FROM pulled_images WHERE node = $1 ORDER BY pulled_at",
        )
        .bind(self.node.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    async fn forget_pulled_image(&self, reference: &str) -> Result<()> {
        let query = sqlx::query("DELETE FROM pulled_images WHERE node = $1 AND reference = $2")
            .bind(self.node.as_str())
            .bind(reference);
        self.run(query).await
    }

    async fn delete_demo(&self, id: DemoId, at: Timestamp) -> Result<bool> {
        let query = sqlx::query(
            "UPDATE demos SET deleted_at = $1, enabled = 0 WHERE id = $2 AND deleted_at IS NULL",
        )
        .bind(at.millis())
        .bind(id.to_string());
        self.changed(query).await
    }

    async fn catalog(&self) -> Result<Vec<(Demo, String)>> {
        let rows = sqlx::query(
            "SELECT demos.*, vendors.name AS vendor_name FROM demos
             JOIN vendors ON vendors.id = demos.vendor_id
             WHERE demos.deleted_at IS NULL AND demos.enabled = 1
               AND demos.image_status = 'ready'
             ORDER BY vendors.name, demos.slug",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((demo_from(row)?, row.try_get("vendor_name")?)))
            .collect()
    }
}
