//! What authenticates a request: URL tokens generated for endpoints and
//! the hashes of API keys. The HTTP layer sees the store only through
//! [`CredentialStore`].

use super::StoreError;

/// An API key of an endpoint, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    /// The key's id, shown by `keys list` and used by `keys revoke`.
    pub id: String,
    /// Its endpoint.
    pub endpoint: String,
    /// An optional name.
    pub name: Option<String>,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// A new API key: its SHA-256 hash, never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// Its description.
    pub info: ApiKeyInfo,
    /// The SHA-256 of the key.
    pub hash: [u8; 32],
}

/// The credentials part of the store.
#[async_trait::async_trait]
pub trait CredentialStore: Send + Sync + 'static {
    /// The URL token of `endpoint`: the stored one, or `new_token`, stored.
    async fn url_token(&self, endpoint: &str, new_token: String) -> Result<String, StoreError>;

    /// Replaces the stored URL token of `endpoint` with `new_token`.
    async fn replace_url_token(&self, endpoint: &str, new_token: String) -> Result<(), StoreError>;

    /// Adds an API key.
    async fn add_api_key(&self, key: NewApiKey) -> Result<(), StoreError>;

    /// The API keys, of one endpoint or of all, revoked ones included.
    async fn api_keys(&self, endpoint: Option<&str>) -> Result<Vec<ApiKeyInfo>, StoreError>;

    /// Revokes the key of `endpoint` with this id or name. Returns whether a
    /// key was revoked.
    async fn revoke_api_key(&self, endpoint: &str, id_or_name: &str) -> Result<bool, StoreError>;

    /// Whether `hash` is the SHA-256 of a key of `endpoint` that is not
    /// revoked: one lookup by hash, whatever the number of keys.
    async fn is_active_key(&self, endpoint: &str, hash: [u8; 32]) -> Result<bool, StoreError>;
}
