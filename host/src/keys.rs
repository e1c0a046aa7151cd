//! Endpoint API keys: made here, shown once, kept only as SHA-256 hashes.
//!
//! A key is `fhk_` and 43 characters of base64url: 256 random bits, so a
//! plain SHA-256 (not a slow password hash) is the right way to store it,
//! and it lets a key be checked without a per-key salt: the store looks the
//! presented key's hash up in its index of hashes, one search whatever the
//! number of keys. That search compares the SHA-256 of the caller's input,
//! so its timing tells nothing usable: learning that a hash shares a
//! prefix with a stored one gives no way to a key with that hash.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::{ApiKeyInfo, NewApiKey, now_ms};

/// The prefix of every key, so that people and secret scanners can tell
/// what a leaked string is.
pub const PREFIX: &str = "fhk_";

/// A new key: the secret, to show once, and what the store keeps.
pub struct GeneratedKey {
    /// The key to give to the caller.
    pub secret: String,
    /// What the store keeps: its hash and description.
    pub record: NewApiKey,
}

/// Makes a new random key for `endpoint`.
pub fn generate(endpoint: &str, name: Option<String>) -> GeneratedKey {
    let mut random = [0u8; 32];
    rand::rng().fill_bytes(&mut random);
    let secret = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(random));
    let mut id = [0u8; 6];
    rand::rng().fill_bytes(&mut id);
    GeneratedKey {
        record: NewApiKey {
            info: ApiKeyInfo {
                id: format!("key_{}", hex::encode(id)),
                endpoint: endpoint.to_owned(),
                name,
                prefix: secret[..PREFIX.len() + 6].to_owned(),
                created_at: now_ms(),
                revoked_at: None,
            },
            hash: hash(&secret),
        },
        secret,
    }
}

/// The SHA-256 of a key.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_matches_its_own_hash_only() {
        let one = generate("support", Some("ci".into()));
        let two = generate("support", None);
        assert!(one.secret.starts_with(PREFIX));
        assert_eq!(one.secret.len(), PREFIX.len() + 43);
        assert!(one.record.info.id.starts_with("key_"));
        assert!(one.secret.starts_with(&one.record.info.prefix));
        assert_ne!(one.secret, two.secret);
        assert_eq!(one.record.hash, hash(&one.secret));
        assert_ne!(one.record.hash, two.record.hash);
    }
}
