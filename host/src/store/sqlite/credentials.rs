//! The credentials part: generated URL tokens and API-key hashes.

use rusqlite::params;

use super::SqliteStore;
use crate::store::{ApiKeyInfo, CredentialStore, NewApiKey, StoreError, now_ms};

/// Whether a key hash is an active key of an endpoint.
pub(super) const ACTIVE_KEY: &str =
    "SELECT 1 FROM api_keys WHERE hash = ? AND endpoint = ? AND revoked_at IS NULL";
fn api_key_info(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyInfo> {
    Ok(ApiKeyInfo {
        id: row.get("id")?,
        endpoint: row.get("endpoint")?,
        name: row.get("name")?,
        prefix: row.get("prefix")?,
        created_at: row.get("created_at")?,
        revoked_at: row.get("revoked_at")?,
    })
}

#[async_trait::async_trait]
impl CredentialStore for SqliteStore {
    async fn url_token(&self, endpoint: &str, new_token: String) -> Result<String, StoreError> {
        let endpoint = endpoint.to_owned();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO endpoints (name, url_token, created_at) VALUES (?, ?, ?)
                 ON CONFLICT (name) DO NOTHING",
                params![endpoint, new_token, now_ms()],
            )?;
            conn.query_row(
                "SELECT url_token FROM endpoints WHERE name = ?",
                [&endpoint],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn replace_url_token(&self, endpoint: &str, new_token: String) -> Result<(), StoreError> {
        let endpoint = endpoint.to_owned();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO endpoints (name, url_token, created_at) VALUES (?, ?, ?)
                 ON CONFLICT (name) DO UPDATE SET url_token = excluded.url_token",
                params![endpoint, new_token, now_ms()],
            )
            .map(drop)
        })
        .await
    }

    async fn add_api_key(&self, key: NewApiKey) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO api_keys (id, endpoint, name, prefix, hash, created_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
                params![
                    key.info.id,
                    key.info.endpoint,
                    key.info.name,
                    key.info.prefix,
                    &key.hash[..],
                    key.info.created_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn api_keys(&self, endpoint: Option<&str>) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let endpoint = endpoint.map(str::to_owned);
        self.read(move |conn| {
            conn.prepare(
                "SELECT * FROM api_keys WHERE ?1 IS NULL OR endpoint = ?1
                 ORDER BY endpoint, created_at",
            )?
            .query_map([endpoint], api_key_info)?
            .collect()
        })
        .await
    }

    async fn revoke_api_key(&self, endpoint: &str, id_or_name: &str) -> Result<bool, StoreError> {
        let (endpoint, id_or_name) = (endpoint.to_owned(), id_or_name.to_owned());
        self.write(move |conn| {
            let revoked = conn.execute(
                "UPDATE api_keys SET revoked_at = ?
                 WHERE endpoint = ? AND (id = ?3 OR name = ?3) AND revoked_at IS NULL",
                params![now_ms(), endpoint, id_or_name],
            )?;
            Ok(revoked > 0)
        })
        .await
    }

    async fn is_active_key(&self, endpoint: &str, hash: [u8; 32]) -> Result<bool, StoreError> {
        // `hash` is UNIQUE, so this is one search of its index, the same
        // cost with one key or a million. The search runs on the SHA-256
        // of what the caller sent, so its timing tells nothing usable: a
        // hash prefix that matches gives no way to a key that has it.
        self.point_read(|conn| {
            conn.prepare_cached(ACTIVE_KEY)?
                .exists(params![&hash[..], endpoint])
        })
    }
}
