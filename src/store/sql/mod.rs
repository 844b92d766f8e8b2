//! The SQL store: one implementation of the store's traits for SQLite (the embedded default,
//! one file in WAL mode) and PostgreSQL (several nodes sharing one database), through
//! sqlx's `Any` driver. One file per aggregate, each implementing its trait from `store`.
//!
//! # One SQL for both
//! Every statement is written once, in the SQL both databases read: `$1, $2 …` placeholders
//! (SQLite binds `$N` by number), ids and times as TEXT and BIGINT milliseconds, flags as
//! 0/1 integers, counts as `COUNT(CASE WHEN … THEN 1 END)`, `CASE` for a scalar maximum,
//! `INSERT … ON CONFLICT DO NOTHING`. Where one statement truly differs, `Dialect` holds
//! the two texts side by side: the webhook claim (`FOR UPDATE SKIP LOCKED`), the pragmas
//! that wipe a replaced secret from SQLite's file, and the advisory locks of `serialise`
//! (Postgres only). The schemas are `migrations/sqlite` and `migrations/postgres`.
//!
//! # A store acts for one node
//! `SqlStore::node` is the node this view acts for; `for_node` is the same pool acting for
//! another (a caretaker keeping a lost node's deadlines).
//! - What a node records is its own: `insert_sandbox`, `insert_warm` and `claim_warm` set
//!   `node`; address slots are counted per node (each node has its own subnet); a new
//!   sandbox's `Capacity.running` and `Capacity.live` are checked against this node's
//!   sandboxes, `per_demo` against the whole deployment's.
//! - What a node does alone reads its own rows only: `end_due`, `next_deadline`,
//!   `pending_teardowns`, `sleep_due`, `next_idle`, `ids_with_status`,
//!   `count_live_by_state`, `reserve_wake` (`max_running` is per node), `release_all_wakes`,
//!   `forget_unreceived(None)`, `ends_without_event`, `warm_members`, the pulled images
//!   (images are per Engine), `release_delivery_leases` (only the leases it took).
//! - Reads of one record, or of lists for people (`sandbox`, `sandboxes`, histories,
//!   reports, the funnel, `count_live_for_client`: the rate limit is deployment-wide) are
//!   deployment-wide; `Sandbox.node` says whose a sandbox is.
//! - Any node may claim webhook deliveries, each delivery one node only.
//!
//! # Races between nodes
//! A claim is one conditional statement (`UPDATE … WHERE <still claimable> … RETURNING`):
//! under Postgres' READ COMMITTED the loser waits on the row lock and re-checks the WHERE
//! against the winner's row, so a sandbox is ended (or put to sleep) once. A condition that
//! counts *other* rows (free places, the lowest free slot, events of a kind, an invitation's
//! trials) is not re-checked that way, so in Postgres those statements first take
//! transaction-scoped advisory locks (`serialise`), each in its own statement so that the
//! counting statement's snapshot sees what the previous holder committed. SQLite has one
//! writer at a time, which serialises them already.

mod access;
mod conversation;
mod demos;
mod history;
mod nodes;
mod outbox;
mod pool;
mod sandboxes;
mod vendors;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use super::{Result, Store, StoreError};
use crate::domain::{NodeName, SandboxId, Timestamp};

/// The schemas, for the store and for tests of its migrations. sqlx keys a migration by its
/// version, so the SQLite files keep the checksums earlier databases recorded.
pub(super) static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
pub(super) static POSTGRES_MIGRATOR: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/postgres");

/// Which database the pool speaks to: for the few statements written twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    fn of(url: &str) -> Result<Dialect> {
        if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Dialect::Postgres)
        } else {
            Err(StoreError::Unavailable(sqlx::Error::Configuration(
                "the database URL must start with sqlite: or postgres:".into(),
            )))
        }
    }

    /// The statement for this database: `sqlite`'s text or `postgres`'.
    fn pick(self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite,
            Dialect::Postgres => postgres,
        }
    }
}

#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    node: NodeName,
}

impl SqlStore {
    /// Opens the database at `url` and brings its schema up to date, acting for `node`.
    /// `sqlite://path` (created if missing) or `sqlite::memory:`: the embedded store of one
    /// node. `postgres://…`: a database several nodes share; a pool that fails fast while
    /// the server is down (`Unavailable`: the API answers 503) and reconnects by itself.
    pub async fn connect(url: &str, node: NodeName) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::of(url)?;
        let pool = match dialect {
            Dialect::Sqlite => sqlite_pool(url).await?,
            Dialect::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(10)
                    .acquire_timeout(Duration::from_secs(3))
                    .connect(url)
                    .await?
            }
        };
        let migrator = match dialect {
            Dialect::Sqlite => &SQLITE_MIGRATOR,
            Dialect::Postgres => &POSTGRES_MIGRATOR,
        };
        migrator
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(e.into()))?;
        let store = SqlStore {
            pool,
            dialect,
            node,
        };
        store.adopt_rows_from_before_nodes().await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES ('instance', $1) ON CONFLICT DO NOTHING")
            .bind(uuid::Uuid::new_v4().simple().to_string())
            .execute(&store.pool)
            .await?;
        Ok(store)
    }

    /// Rows SQLite kept from before there were nodes become the connecting node's: an
    /// SQLite database has only ever one node. (Postgres began with nodes.)
    async fn adopt_rows_from_before_nodes(&self) -> Result<()> {
        if self.dialect != Dialect::Sqlite {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for sql in [
            "UPDATE sandboxes SET node = $1 WHERE node IS NULL",
            "UPDATE warm_members SET node = $1 WHERE node IS NULL",
            "UPDATE pulled_images SET node = $1 WHERE node IS NULL",
            "UPDATE webhook_deliveries SET leased_by = $1
             WHERE lease_until IS NOT NULL AND leased_by IS NULL",
        ] {
            sqlx::query(sql)
                .bind(self.node.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// In Postgres, waits for and holds until `tx` ends the advisory lock of each key (in
    /// the order given: callers name them demo, then node, so two never wait on each
    /// other). Statements after it in `tx` see what the previous holder committed. SQLite
    /// needs none: one writer at a time.
    async fn serialise(&self, tx: &mut sqlx::AnyConnection, keys: &[&str]) -> Result<()> {
        if self.dialect == Dialect::Postgres {
            for key in keys {
                sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock(hashtext($1))) AS locked")
                    .bind(*key)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Ok(())
    }
}

/// SQLite as the embedded store wants it: WAL, `synchronous = NORMAL`, a busy timeout,
/// `secure_delete` (what is deleted or overwritten, such as a load command's output or a
/// secret in clear, is zeroed rather than left in a free page), foreign keys, created if
/// missing.
async fn sqlite_pool(url: &str) -> Result<AnyPool> {
    let url = if url.contains("mode=") || url.contains(":memory:") {
        url.to_string()
    } else {
        format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
    };
    let options = if url.contains(":memory:") {
        // An in-memory database exists once per connection: keep exactly one, for ever (a
        // pool that retires idle or old connections would lose the database).
        AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            // Tests drive time by hand; a wait for the one connection is no failure.
            .acquire_timeout(Duration::from_secs(365 * 24 * 3600))
    } else {
        AnyPoolOptions::new().max_connections(8)
    };
    Ok(options
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
                     PRAGMA busy_timeout = 5000; PRAGMA secure_delete = ON;
                     PRAGMA foreign_keys = ON;",
                )
                .await?;
                Ok(())
            })
        })
        .connect(&url)
        .await?)
}

#[async_trait]
impl Store for SqlStore {
    fn node(&self) -> &NodeName {
        &self.node
    }

    fn for_node(&self, node: &NodeName) -> Arc<dyn Store> {
        Arc::new(SqlStore {
            node: node.clone(),
            ..self.clone()
        })
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
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }
}

/// The lowest free address slot of the node `$node` is 0 or one past a slot it holds: these
/// candidates, minus the held slots. Slots are held by sandboxes until their data is
/// deleted, and by warm pool members; each node has its own.
macro_rules! held_slots {
    ($node:literal) => {
        concat!(
            "SELECT 0 AS free
             UNION SELECT addr_slot + 1 FROM sandboxes
                   WHERE node = ",
            $node,
            " AND addr_slot IS NOT NULL AND data_deleted_at IS NULL
             UNION SELECT addr_slot + 1 FROM warm_members WHERE node = ",
            $node,
            "
             EXCEPT SELECT addr_slot FROM sandboxes
                   WHERE node = ",
            $node,
            " AND addr_slot IS NOT NULL AND data_deleted_at IS NULL
             EXCEPT SELECT addr_slot FROM warm_members WHERE node = ",
            $node
        )
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

/// A count as read (never negative).
fn count(n: i64) -> u64 {
    n.max(0) as u64
}

/// JSON text of a value the store keeps as JSON.
fn json(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(corrupt)
}

/// A row's `id` column, as a sandbox id.
fn id_of(row: &AnyRow) -> Result<SandboxId> {
    SandboxId::parse(row.try_get("id")?).map_err(corrupt)
}

/// A flag kept as a 0/1 integer (both databases read it so).
fn flag(row: &AnyRow, name: &str) -> Result<bool> {
    Ok(row.try_get::<i64, _>(name)? != 0)
}

/// A statement with its bound values.
type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// How a row becomes a record.
type Read<T> = fn(&AnyRow) -> Result<T>;

/// The three ways a statement's answer is read, in one place each.
impl SqlStore {
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
