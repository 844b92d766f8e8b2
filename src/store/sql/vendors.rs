//! Vendors: names, API key hashes and webhook settings (the secret as its sealer gave it).

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Dialect, SqlStore, conflict_on_unique, corrupt, flag};
use crate::domain::token::TokenHash;
use crate::domain::{Timestamp, Vendor, VendorId, VendorName};
use crate::store::{Result, VendorStore};

fn vendor_from(row: &AnyRow) -> Result<Vendor> {
    Ok(Vendor {
        id: VendorId::parse(row.try_get("id")?).map_err(corrupt)?,
        name: VendorName::parse(row.try_get("name")?).map_err(corrupt)?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

#[async_trait]
impl VendorStore for SqlStore {
    async fn insert_vendor(&self, vendor: &Vendor, key: TokenHash) -> Result<()> {
        sqlx::query("INSERT INTO vendors (id, name, key_hash, created_at) VALUES ($1, $2, $3, $4)")
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
        let query = sqlx::query("SELECT id, name, created_at FROM vendors WHERE id = $1")
            .bind(id.to_string());
        self.one(query, vendor_from).await
    }

    async fn vendor_by_name(&self, name: &str) -> Result<Option<Vendor>> {
        let query =
            sqlx::query("SELECT id, name, created_at FROM vendors WHERE name = $1").bind(name);
        self.one(query, vendor_from).await
    }

    async fn vendor_key(&self, id: VendorId) -> Result<Option<TokenHash>> {
        let hex: Option<String> = sqlx::query_scalar("SELECT key_hash FROM vendors WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        hex.map(|h| TokenHash::from_hex(&h).ok_or_else(|| corrupt("vendor key hash")))
            .transpose()
    }

    async fn vendor_webhook(&self, vendor: VendorId) -> Result<Option<(String, String)>> {
        let row = sqlx::query(
            "SELECT webhook_url, webhook_secret FROM vendors
             WHERE id = $1 AND webhook_url IS NOT NULL AND webhook_secret IS NOT NULL",
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
            "UPDATE vendors SET webhook_url = $2,
                 webhook_secret = COALESCE(webhook_secret, $3)
             WHERE id = $1
             RETURNING CASE WHEN webhook_secret = $3 THEN 1 ELSE 0 END AS fresh",
        )
        .bind(vendor.to_string())
        .bind(url)
        .bind(new_secret)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| flag(&r, "fresh")).transpose()?.unwrap_or(false))
    }

    async fn webhook_secrets(&self) -> Result<Vec<(VendorId, String)>> {
        let rows = sqlx::query(
            "SELECT id, webhook_secret FROM vendors WHERE webhook_secret IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id = VendorId::parse(r.try_get("id")?).map_err(corrupt)?;
                Ok((id, r.try_get("webhook_secret")?))
            })
            .collect()
    }

    async fn replace_webhook_secret(&self, vendor: VendorId, old: &str, new: &str) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        // SQLite: the old value's bytes are overwritten, not left in a free page, and the
        // write-ahead log that held the page is folded back into the file and emptied.
        // (Postgres keeps the old row version until a vacuum: its files are the database
        // server's to protect.)
        if self.dialect == Dialect::Sqlite {
            sqlx::query("PRAGMA secure_delete = ON")
                .execute(&mut *conn)
                .await?;
        }
        let replaced = sqlx::query(
            "UPDATE vendors SET webhook_secret = $3 WHERE id = $1 AND webhook_secret = $2",
        )
        .bind(vendor.to_string())
        .bind(old)
        .bind(new)
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        if self.dialect == Dialect::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut *conn)
                .await?;
        }
        Ok(replaced)
    }
}
