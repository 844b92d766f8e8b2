//! Vendors: names, API key hashes and webhook settings.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{SqliteStore, conflict_on_unique, corrupt};
use crate::domain::token::TokenHash;
use crate::domain::{Timestamp, Vendor, VendorId, VendorName};
use crate::store::{Result, VendorStore};

fn vendor_from(row: &SqliteRow) -> Result<Vendor> {
    Ok(Vendor {
        id: VendorId::parse(row.try_get("id")?).map_err(corrupt)?,
        name: VendorName::parse(row.try_get("name")?).map_err(corrupt)?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

#[async_trait]
impl VendorStore for SqliteStore {
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
        let query = sqlx::query("SELECT id, name, created_at FROM vendors ORDER BY id");
        self.all(query, vendor_from).await
    }

    async fn vendor(&self, id: VendorId) -> Result<Option<Vendor>> {
        let query = sqlx::query("SELECT id, name, created_at FROM vendors WHERE id = ?")
            .bind(id.to_string());
        self.one(query, vendor_from).await
    }

    async fn vendor_by_name(&self, name: &str) -> Result<Option<Vendor>> {
        let query =
            sqlx::query("SELECT id, name, created_at FROM vendors WHERE name = ?").bind(name);
        self.one(query, vendor_from).await
    }

    async fn vendor_key(&self, id: VendorId) -> Result<Option<TokenHash>> {
        let hex: Option<String> = sqlx::query_scalar("SELECT key_hash FROM vendors WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        hex.map(|h| TokenHash::from_hex(&h).ok_or_else(|| corrupt("vendor key hash")))
            .transpose()
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
}
