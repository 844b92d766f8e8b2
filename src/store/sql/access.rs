//! What vendors may use: registry credentials (the password as its sealer gave it) and the
//! Engine-only images operators gave them.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{SqlStore, corrupt};
use crate::domain::{ImageGrant, RegistryServer, StoredLogin, Timestamp, VendorId};
use crate::store::{AccessStore, Result};

fn login_from(row: &AnyRow) -> Result<StoredLogin> {
    Ok(StoredLogin {
        server: RegistryServer::parse(row.try_get("server")?).map_err(corrupt)?,
        username: row.try_get("username")?,
        sealed_password: row.try_get("password")?,
        updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
    })
}

fn grant_from(row: &AnyRow) -> Result<ImageGrant> {
    Ok(ImageGrant {
        image: row.try_get("image")?,
        vendor_id: VendorId::parse(row.try_get("vendor_id")?).map_err(corrupt)?,
        given_at: Timestamp::from_millis(row.try_get("given_at")?),
    })
}

#[async_trait]
impl AccessStore for SqlStore {
    async fn put_login(&self, vendor: VendorId, login: &StoredLogin) -> Result<()> {
        // The earlier sealed password is overwritten in place (`secure_delete`).
        let query = sqlx::query(
            "INSERT INTO registry_credentials (vendor_id, server, username, password, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (vendor_id, server) DO UPDATE SET
                 username = excluded.username, password = excluded.password,
                 updated_at = excluded.updated_at",
        )
        .bind(vendor.to_string())
        .bind(login.server.as_str())
        .bind(&login.username)
        .bind(&login.sealed_password)
        .bind(login.updated_at.millis());
        self.run(query).await
    }

    async fn logins(&self, vendor: VendorId) -> Result<Vec<StoredLogin>> {
        let query =
            sqlx::query("SELECT * FROM registry_credentials WHERE vendor_id = $1 ORDER BY server")
                .bind(vendor.to_string());
        self.all(query, login_from).await
    }

    async fn login(
        &self,
        vendor: VendorId,
        server: &RegistryServer,
    ) -> Result<Option<StoredLogin>> {
        let query =
            sqlx::query("SELECT * FROM registry_credentials WHERE vendor_id = $1 AND server = $2")
                .bind(vendor.to_string())
                .bind(server.as_str());
        self.one(query, login_from).await
    }

    async fn delete_login(&self, vendor: VendorId, server: &RegistryServer) -> Result<bool> {
        let query =
            sqlx::query("DELETE FROM registry_credentials WHERE vendor_id = $1 AND server = $2")
                .bind(vendor.to_string())
                .bind(server.as_str());
        self.changed(query).await
    }

    async fn give_image(&self, grant: &ImageGrant) -> Result<(ImageGrant, bool)> {
        let insert = sqlx::query(
            "INSERT INTO image_grants (vendor_id, image, given_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(grant.vendor_id.to_string())
        .bind(&grant.image)
        .bind(grant.given_at.millis());
        let new = self.changed(insert).await?;
        let query = sqlx::query("SELECT * FROM image_grants WHERE vendor_id = $1 AND image = $2")
            .bind(grant.vendor_id.to_string())
            .bind(&grant.image);
        let kept = self
            .one(query, grant_from)
            .await?
            .ok_or_else(|| corrupt("an image grant vanished as it was made"))?;
        Ok((kept, new))
    }

    async fn images_given(&self, vendor: VendorId) -> Result<Vec<ImageGrant>> {
        let query = sqlx::query("SELECT * FROM image_grants WHERE vendor_id = $1 ORDER BY image")
            .bind(vendor.to_string());
        self.all(query, grant_from).await
    }

    async fn is_given(&self, vendor: VendorId, image: &str) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM image_grants WHERE vendor_id = $1 AND image = $2")
                .bind(vendor.to_string())
                .bind(image)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }
}
