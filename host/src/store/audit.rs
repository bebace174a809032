//! The capability audit log.

use sqlx::Row;

use super::{Error, Store};

/// Append one audit record on `conn`.
pub(super) async fn insert(
    conn: &mut sqlx::AnyConnection,
    r: &crate::model::AuditRecord,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO audit_log (at, plugin, capability, operation, target, allowed, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(r.at)
    .bind(&r.plugin)
    .bind(&r.capability)
    .bind(&r.operation)
    .bind(&r.target)
    .bind(i64::from(r.allowed))
    .bind(&r.detail)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Append capability audit records.
    pub async fn audit(&self, records: &[crate::model::AuditRecord]) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        for r in records {
            insert(&mut tx, r).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The newest `limit` audit records, newest first; only `plugin`'s if given.
    pub async fn audit_log(
        &self,
        plugin: Option<&str>,
        limit: u32,
    ) -> Result<Vec<crate::model::AuditRecord>, Error> {
        let rows = sqlx::query(
            "SELECT at, plugin, capability, operation, target, allowed, detail
             FROM audit_log WHERE ($1 = '' OR plugin = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(plugin.unwrap_or_default())
        .bind(limit as i64)
        .fetch_all(&self.reads)
        .await?;
        Ok(rows
            .iter()
            .map(|r| crate::model::AuditRecord {
                at: r.get(0),
                plugin: r.get(1),
                capability: r.get(2),
                operation: r.get(3),
                target: r.get(4),
                allowed: r.get::<i64, _>(5) != 0,
                detail: r.get(6),
            })
            .collect())
    }
}
