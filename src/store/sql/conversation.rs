//! The sales conversation: invitations, page views by the minute, the funnel, and the
//! feedback and contact requests on a vendor's trials.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::sandboxes::sandbox_from;
use super::{SqlStore, corrupt, invitation_trials, ts};
use crate::domain::{
    DemoId, EventRecord, Funnel, Invitation, InvitationId, Sandbox, SandboxId, Timestamp, VendorId,
};
use crate::store::{ConversationStore, Result};

fn invitation_from(row: &AnyRow) -> Result<Invitation> {
    Ok(Invitation {
        id: InvitationId::parse(row.try_get("id")?).map_err(corrupt)?,
        vendor_id: VendorId::parse(row.try_get("vendor_id")?).map_err(corrupt)?,
        demo_id: DemoId::parse(row.try_get("demo_id")?).map_err(corrupt)?,
        company: row.try_get("company")?,
        email: row.try_get("email")?,
        note: row.try_get("note")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        expires_at: Timestamp::from_millis(row.try_get("expires_at")?),
        opened_at: ts(row.try_get("opened_at")?),
        max_trials: row.try_get::<i64, _>("max_trials")?.max(0) as u32,
        trials: row.try_get::<i64, _>("trials")?.max(0) as u32,
        sandbox_id: row
            .try_get::<Option<String>, _>("sandbox_id")?
            .map(|id| SandboxId::parse(&id).map_err(corrupt))
            .transpose()?,
        used_at: ts(row.try_get("used_at")?),
    })
}

fn conversation_from(row: &AnyRow) -> Result<(Sandbox, EventRecord)> {
    let data: String = row.try_get("event_data")?;
    let event = EventRecord {
        at: Timestamp::from_millis(row.try_get("event_at")?),
        event: serde_json::from_str(&data).map_err(corrupt)?,
    };
    Ok((sandbox_from(row)?, event))
}

const MINUTE_MS: i64 = 60_000;

#[async_trait]
impl ConversationStore for SqlStore {
    async fn insert_invitation(&self, i: &Invitation) -> Result<()> {
        let query = sqlx::query(
            "INSERT INTO invitations (id, vendor_id, demo_id, company, email, note, created_at,
                                      expires_at, max_trials)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(i.id.to_string())
        .bind(i.vendor_id.to_string())
        .bind(i.demo_id.to_string())
        .bind(&i.company)
        .bind(&i.email)
        .bind(&i.note)
        .bind(i.created_at.millis())
        .bind(i.expires_at.millis())
        .bind(i64::from(i.max_trials));
        self.run(query).await
    }

    async fn invitation(&self, id: InvitationId) -> Result<Option<Invitation>> {
        let query = sqlx::query(concat!(
            "SELECT i.*, ",
            invitation_trials!("i.id"),
            " AS trials FROM invitations i WHERE id = $1"
        ))
        .bind(id.to_string());
        self.one(query, invitation_from).await
    }

    async fn invitations(&self, vendor: Option<VendorId>, limit: u32) -> Result<Vec<Invitation>> {
        let query = sqlx::query(concat!(
            "SELECT i.*, ",
            invitation_trials!("i.id"),
            " AS trials FROM invitations i WHERE $1 IS NULL OR vendor_id = $1
             ORDER BY created_at DESC, id LIMIT $2"
        ))
        .bind(vendor.map(|v| v.to_string()))
        .bind(i64::from(limit));
        self.all(query, invitation_from).await
    }

    async fn invitation_opened(&self, id: InvitationId, at: Timestamp) -> Result<()> {
        let query = sqlx::query(
            "UPDATE invitations SET opened_at = $1 WHERE id = $2 AND opened_at IS NULL",
        )
        .bind(at.millis())
        .bind(id.to_string());
        self.run(query).await
    }

    async fn page_viewed(&self, demo: DemoId, at: Timestamp) -> Result<()> {
        let query = sqlx::query(
            "INSERT INTO demo_page_views (demo_id, minute, views) VALUES ($1, $2, 1)
             ON CONFLICT (demo_id, minute) DO UPDATE SET views = demo_page_views.views + 1",
        )
        .bind(demo.to_string())
        .bind(at.millis().div_euclid(MINUTE_MS));
        self.run(query).await
    }

    async fn funnel(&self, demo: DemoId, since: Timestamp) -> Result<Funnel> {
        let demo = demo.to_string();
        // Views are kept by the minute: the minute `since` falls in counts whole.
        let page_views: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(views), 0) AS BIGINT) FROM demo_page_views
             WHERE demo_id = $1 AND minute >= $2",
        )
        .bind(&demo)
        .bind(since.millis().div_euclid(MINUTE_MS))
        .fetch_one(&self.pool)
        .await?;
        // Whether the sandbox's history holds an event of this kind (a macro, so the
        // statement stays one static string).
        macro_rules! has {
            ($kind:literal) => {
                concat!(
                    "COUNT(CASE WHEN EXISTS (SELECT 1 FROM sandbox_events e
                                             WHERE e.sandbox_id = s.id AND e.kind = '",
                    $kind,
                    "') THEN 1 END)"
                )
            };
        }
        let sql = concat!(
            "SELECT COUNT(*) AS trials,
                    COUNT(ready_at) AS ready,
                    COUNT(first_opened_at) AS opened,
                    COUNT(CASE WHEN active_ms >= 300000 THEN 1 END) AS active_5m, ",
            has!("extended"),
            " AS extended, ",
            has!("feedback"),
            " AS feedback, ",
            has!("contact_requested"),
            " AS contact_requested
             FROM sandboxes s
             WHERE demo_id = $1 AND receiving = 0 AND created_at >= $2"
        );
        let row = sqlx::query(sql)
            .bind(&demo)
            .bind(since.millis())
            .fetch_one(&self.pool)
            .await?;
        let count = |name: &str| -> Result<u64> { Ok(row.try_get::<i64, _>(name)?.max(0) as u64) };
        Ok(Funnel {
            page_views: page_views.max(0) as u64,
            trials: count("trials")?,
            ready: count("ready")?,
            opened: count("opened")?,
            active_5m: count("active_5m")?,
            extended: count("extended")?,
            feedback: count("feedback")?,
            contact_requested: count("contact_requested")?,
        })
    }

    async fn conversations(
        &self,
        vendor: Option<VendorId>,
        limit: u32,
    ) -> Result<Vec<(Sandbox, EventRecord)>> {
        let query = sqlx::query(
            "SELECT s.*, e.at AS event_at, e.data AS event_data
             FROM sandbox_events e JOIN sandboxes s ON s.id = e.sandbox_id
             WHERE e.kind IN ('feedback', 'contact_requested')
               AND ($1 IS NULL OR s.vendor_id = $1)
             ORDER BY e.seq DESC LIMIT $2",
        )
        .bind(vendor.map(|v| v.to_string()))
        .bind(i64::from(limit));
        self.all(query, conversation_from).await
    }
}
