//! `mask_logging`: the session ids of the endpoints that set it never reach
//! the log or the traces in clear. Each is written as `~` and 12 hex digits
//! of an HMAC-SHA-256 under a key drawn at start, so the lines of one
//! session can still be followed within a run, but an id cannot be looked
//! up from a guess (an e-mail address, a phone number), nor followed across
//! restarts. Message text and data are kept out of the log by the same
//! setting (see `EndpointConfig::withholds_content`); flowhost never logs
//! user ids.
//!
//! The set of masking endpoints is the process's, as the log is: replaced
//! whenever an endpoint table is, and read wherever a session is logged
//! (`SessionKey`'s `Display`, the turn's and the delivery's spans).

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The endpoints whose sessions are masked.
static MASKED: LazyLock<ArcSwap<HashSet<String>>> = LazyLock::new(ArcSwap::default);

/// The key of this run's hashes.
static KEY: LazyLock<[u8; 32]> = LazyLock::new(rand::random);

/// Makes `endpoints` the ones whose sessions are masked.
pub(crate) fn set_masked(endpoints: impl IntoIterator<Item = String>) {
    MASKED.store(Arc::new(endpoints.into_iter().collect()));
}

/// `session_id` of `endpoint` as the log may show it.
pub(crate) fn session_id<'a>(endpoint: &str, session_id: &'a str) -> Cow<'a, str> {
    if !MASKED.load().contains(endpoint) {
        return Cow::Borrowed(session_id);
    }
    Cow::Owned(mask(endpoint, session_id))
}

fn mask(endpoint: &str, id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_slice()).expect("any key length");
    mac.update(endpoint.as_bytes());
    mac.update(&[0]);
    mac.update(id.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("~{}", &hex::encode(digest)[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_id_is_stable_within_a_run_and_tells_nothing() {
        let a = mask("shop", "+4915112345678");
        assert_eq!(a, mask("shop", "+4915112345678"));
        assert_ne!(a, mask("shop", "+4915112345679"));
        assert_ne!(a, mask("other", "+4915112345678"));
        assert!(!a.contains("4915"), "{a}");
        assert_eq!(a.len(), 13);
    }
}
