//! The credentials part: generated URL tokens and API-key hashes, shared by
//! every host. Nothing is cached: a key revoked through one host is refused
//! by every host at its next request.

use super::{NOW_MS, PostgresStore};
use crate::store::{ApiKeyInfo, CredentialStore, NewApiKey, StoreError};

fn api_key_info(row: &tokio_postgres::Row) -> ApiKeyInfo {
    ApiKeyInfo {
        id: row.get("id"),
        endpoint: row.get("endpoint"),
        name: row.get("name"),
        prefix: row.get("prefix"),
        created_at: row.get("created_at"),
        revoked_at: row.get("revoked_at"),
    }
}

#[async_trait::async_trait]
impl CredentialStore for PostgresStore {
    async fn url_token(&self, endpoint: &str, new_token: String) -> Result<String, StoreError> {
        let conn = self.conn().await?;
        // The first host to store a token wins; the others read it back, so
        // every host serves the endpoint at the same URL.
        conn.execute(
            &format!(
                "INSERT INTO endpoints (name, url_token, created_at) VALUES ($1, $2, {NOW_MS})
                 ON CONFLICT (name) DO NOTHING"
            ),
            &[&endpoint, &new_token],
        )
        .await?;
        let row = conn
            .query_one(
                "SELECT url_token FROM endpoints WHERE name = $1",
                &[&endpoint],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn replace_url_token(&self, endpoint: &str, new_token: String) -> Result<(), StoreError> {
        self.conn()
            .await?
            .execute(
                &format!(
                    "INSERT INTO endpoints (name, url_token, created_at) VALUES ($1, $2, {NOW_MS})
                     ON CONFLICT (name) DO UPDATE SET url_token = excluded.url_token"
                ),
                &[&endpoint, &new_token],
            )
            .await?;
        Ok(())
    }

    async fn add_api_key(&self, key: NewApiKey) -> Result<(), StoreError> {
        self.conn()
            .await?
            .execute(
                "INSERT INTO api_keys (id, endpoint, name, prefix, hash, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &key.info.id,
                    &key.info.endpoint,
                    &key.info.name,
                    &key.info.prefix,
                    &&key.hash[..],
                    &key.info.created_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn api_keys(&self, endpoint: Option<&str>) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let rows = self
            .conn()
            .await?
            .query(
                "SELECT * FROM api_keys WHERE $1::TEXT IS NULL OR endpoint = $1
                 ORDER BY endpoint, created_at, id",
                &[&endpoint],
            )
            .await?;
        Ok(rows.iter().map(api_key_info).collect())
    }

    async fn revoke_api_key(&self, endpoint: &str, id_or_name: &str) -> Result<bool, StoreError> {
        let revoked = self
            .conn()
            .await?
            .execute(
                &format!(
                    "UPDATE api_keys SET revoked_at = {NOW_MS}
                     WHERE endpoint = $1 AND (id = $2 OR name = $2) AND revoked_at IS NULL"
                ),
                &[&endpoint, &id_or_name],
            )
            .await?;
        Ok(revoked > 0)
    }

    async fn is_active_key(&self, endpoint: &str, hash: [u8; 32]) -> Result<bool, StoreError> {
        // One search of the hash's unique index, as in SQLite: the timing
        // tells nothing of a key the caller does not have.
        let row = self
            .conn()
            .await?
            .query_opt(
                "SELECT 1 FROM api_keys WHERE hash = $1 AND endpoint = $2 AND revoked_at IS NULL",
                &[&&hash[..], &endpoint],
            )
            .await?;
        Ok(row.is_some())
    }
}
