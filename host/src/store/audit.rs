//! The capability audit log.

use sqlx::Row;

use super::{Error, Holder, Store};

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
        let mut tx = self.begin(Holder::Admin).await?;
        for r in records {
            insert(tx.conn(), r).await?;
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
        Ok(self.audit_page(plugin, None, limit).await?.0)
    }

    /// Up to `limit` audit records older than `before` (a record's place
    /// in the log), newest first, and the cursor of the next page.
    pub async fn audit_page(
        &self,
        plugin: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<crate::model::AuditRecord>, Option<String>), Error> {
        let rows = sqlx::query(
            "SELECT id, at, plugin, capability, operation, target, allowed, detail
             FROM audit_log WHERE ($1 = '' OR plugin = $1) AND id < $2
             ORDER BY id DESC LIMIT $3",
        )
        .bind(plugin.unwrap_or_default())
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.reads)
        .await?;
        let next = (rows.len() > limit as usize)
            .then(|| rows[limit as usize - 1].get::<i64, _>(0).to_string());
        let records = rows
            .iter()
            .take(limit as usize)
            .map(|r| crate::model::AuditRecord {
                at: r.get(1),
                plugin: r.get(2),
                capability: r.get(3),
                operation: r.get(4),
                target: r.get(5),
                allowed: r.get::<i64, _>(6) != 0,
                detail: r.get(7),
            })
            .collect();
        Ok((records, next))
    }
}
