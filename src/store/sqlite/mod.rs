//! The embedded store: one SQLite file in WAL mode, schema from `migrations/`. One file per
//! aggregate, each implementing its trait from `store`.

mod access;
mod conversation;
mod demos;
mod history;
mod nodes_stub;
mod outbox;
mod pool;
mod sandboxes;
mod vendors;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use super::{Result, Store, StoreError};
use crate::domain::{SandboxId, Timestamp};

/// The schema, for the store and for tests of its migrations.
pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

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
            // What is deleted or overwritten (a load command's output, a secret in clear)
            // is zeroed, not left in a free page of the file.
            .pragma("secure_delete", "on")
            .foreign_keys(true);
        let pool = if url.contains(":memory:") {
            // An in-memory database exists once per connection: keep exactly one, for
            // ever (a pool that retires idle or old connections would lose the database).
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .test_before_acquire(false)
                // Tests drive time by hand; a wait for the one connection is no failure.
                .acquire_timeout(Duration::from_secs(365 * 24 * 3600))
        } else {
            SqlitePoolOptions::new().max_connections(8)
        }
        .connect_with(options)
        .await?;
        MIGRATOR
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

#[async_trait]
impl Store for SqliteStore {
    fn node(&self) -> &crate::domain::NodeName {
        static LOCAL: std::sync::OnceLock<crate::domain::NodeName> = std::sync::OnceLock::new();
        LOCAL.get_or_init(|| crate::domain::NodeName::parse("local").unwrap())
    }
    fn for_node(&self, _node: &crate::domain::NodeName) -> std::sync::Arc<dyn Store> {
        std::sync::Arc::new(self.clone())
    }
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

    async fn fix_setting(&self, key: &str, value: &str) -> Result<String> {
        sqlx::query("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }
}

/// The lowest free address slot is 0 or one past a held slot: these candidates, minus the
/// held slots. Slots are held by sandboxes until their data is deleted, and by warm pool
/// members.
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
use held_slots;

/// The condition of a sandbox that costs compute: provisioning, ready, or being woken.
macro_rules! running {
    () => {
        "(status IN ('provisioning', 'ready') OR (status = 'sleeping' AND waking_since IS NOT NULL))"
    };
}
use running;

/// The statuses of a live sandbox, as SQL (a macro so queries stay `&'static str`).
macro_rules! live {
    () => {
        "('provisioning', 'ready', 'sleeping')"
    };
}
use live;

/// The trials an invitation (the SQL expression `$id`) has started that count against its
/// `max_trials`: every one received, but for those that failed.
macro_rules! invitation_trials {
    ($id:literal) => {
        concat!(
            "(SELECT COUNT(*) FROM sandboxes t WHERE t.invitation_id = ",
            $id,
            " AND t.receiving = 0 AND t.status != 'failed')"
        )
    };
}
use invitation_trials;

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

/// JSON text of a value the store keeps as JSON.
fn json(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(corrupt)
}

/// A row's `id` column, as a sandbox id.
fn id_of(row: &SqliteRow) -> Result<SandboxId> {
    SandboxId::parse(row.try_get("id")?).map_err(corrupt)
}

/// A statement with its bound values.
type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// How a row becomes a record.
type Read<T> = fn(&SqliteRow) -> Result<T>;

/// The three ways a statement's answer is read, in one place each.
impl SqliteStore {
    /// The row `query` finds, if any, read by `read`.
    async fn one<T>(&self, query: Query<'_>, read: Read<T>) -> Result<Option<T>> {
        let row = query.fetch_optional(&self.pool).await?;
        row.as_ref().map(read).transpose()
    }

    /// Every row `query` finds, read by `read`.
    async fn all<T>(&self, query: Query<'_>, read: Read<T>) -> Result<Vec<T>> {
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(read).collect()
    }

    /// Runs `query` for what it does.
    async fn run(&self, query: Query<'_>) -> Result<()> {
        query.execute(&self.pool).await?;
        Ok(())
    }

    /// Whether `query` changed exactly one row: a conditional update that won.
    async fn changed(&self, query: Query<'_>) -> Result<bool> {
        Ok(query.execute(&self.pool).await?.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests;
