//! Warm pools: members and their address slots, and the claim that turns one into a sandbox.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::sandboxes::insert_row;
use super::{SqlStore, corrupt, held_slots, json};
use crate::domain::pool::{NewWarmMember, WarmMember, WarmState};
use crate::domain::{DemoId, NewSandbox, SandboxId, Timestamp};
use crate::store::StoreError;
use crate::store::{Capacity, PoolStore, Result};

fn warm_from(row: &AnyRow) -> Result<WarmMember> {
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

#[async_trait]
impl PoolStore for SqlStore {
    async fn insert_warm(&self, member: &NewWarmMember) -> Result<()> {
        // The lowest free slot is read from other rows: in Postgres, under the node's lock.
        let mut tx = self.pool.begin().await?;
        self.serialise(&mut tx, &[&format!("node:{}", self.node)])
            .await?;
        sqlx::query(concat!(
            "INSERT INTO warm_members (id, demo_id, spec, state, addr_slot, created_at, node)
             SELECT $1, $2, $3, 'warming', (SELECT MIN(free) FROM (",
            held_slots!("$5"),
            ") AS candidates), $4, $5"
        ))
        .bind(member.id.to_string())
        .bind(member.demo_id.to_string())
        .bind(json(&member.spec)?)
        .bind(member.created_at.millis())
        .bind(self.node.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn warm_members(&self, demo: Option<DemoId>) -> Result<Vec<WarmMember>> {
        let query = sqlx::query(
            "SELECT * FROM warm_members WHERE node = $2 AND ($1 IS NULL OR demo_id = $1)
             ORDER BY created_at",
        )
        .bind(demo.map(|d| d.to_string()))
        .bind(self.node.as_str());
        self.all(query, warm_from).await
    }

    async fn warm_member(&self, id: SandboxId) -> Result<Option<WarmMember>> {
        let query = sqlx::query("SELECT * FROM warm_members WHERE id = $1").bind(id.to_string());
        self.one(query, warm_from).await
    }

    async fn set_warm_state(
        &self,
        id: SandboxId,
        from: &[WarmState],
        to: WarmState,
    ) -> Result<bool> {
        if from.is_empty() {
            return Ok(false);
        }
        // `state IN ($3, $4, …)`: only the placeholders are written here, the values bound.
        let places: Vec<String> = (0..from.len()).map(|n| format!("${}", n + 3)).collect();
        let sql = format!(
            "UPDATE warm_members SET state = $1 WHERE id = $2 AND state IN ({})",
            places.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to.as_str())
            .bind(id.to_string());
        for state in from {
            query = query.bind(state.as_str());
        }
        self.changed(query).await
    }

    async fn forget_warm(&self, id: SandboxId) -> Result<()> {
        let query = sqlx::query("DELETE FROM warm_members WHERE id = $1").bind(id.to_string());
        self.run(query).await
    }

    async fn claim_warm(&self, s: &NewSandbox, capacity: Capacity) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // The member's delete is a claim of its row; the prospects' limits count other rows
        // (in Postgres, under the demo's and the node's locks, as in `insert_sandbox`).
        let [demo_key, node_key] = self.placing_keys(s.demo_id);
        self.serialise(&mut tx, &[&demo_key, &node_key]).await?;
        let slot: Option<i64> = sqlx::query_scalar(
            "DELETE FROM warm_members
             WHERE id = $1 AND demo_id = $2 AND spec = $3 AND state = 'warm' AND node = $4
             RETURNING addr_slot",
        )
        .bind(s.id.to_string())
        .bind(s.demo_id.to_string())
        .bind(json(&s.spec)?)
        .bind(self.node.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(slot) = slot else {
            // Taken by another prospect, or drained, meanwhile.
            return Ok(false);
        };
        // The member already holds a running place: only the prospects' own limits apply.
        if !insert_row(&mut tx, &self.node, s, Some(slot as u32), capacity, false).await? {
            drop(tx); // the member stays in the pool
            return Err(self.which_limit(s.demo_id, capacity, false).await?);
        }
        tx.commit().await?;
        Ok(true)
    }
}
