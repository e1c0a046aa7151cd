//! The SSRF guard for webhooks: deliveries go only to public addresses,
//! unless `delivery.allow_private_webhooks` is set (local demos and tests).
//!
//! A URL whose host is a literal address (or `localhost`) is refused when
//! the configuration is read. A name is resolved by `PublicOnly` each time
//! a connection is made, and only its public addresses are used, so a name
//! that later resolves to an internal address (DNS rebinding) is refused
//! then. Redirects are never followed, so a receiver cannot bounce a
//! delivery inward either.

use std::net::IpAddr;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::net::{Reach, Unreachable, resolve_checked, restricted};

/// Why the host of `url` is known to be non-public without resolving it: a
/// literal address that is not public, or `localhost`.
pub(crate) fn private_host(url: &Url) -> Option<String> {
    match url.host()? {
        url::Host::Ipv4(ip) => restricted(IpAddr::V4(ip)).map(|r| format!("a {r} address")),
        url::Host::Ipv6(ip) => restricted(IpAddr::V6(ip)).map(|r| format!("a {r} address")),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            (name == "localhost" || name.ends_with(".localhost"))
                .then(|| "loopback (localhost)".into())
        }
    }
}

/// A resolver that returns only public addresses, and fails if a name has
/// none.
pub(crate) struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            // reqwest's own connect timeout bounds the whole connection.
            match resolve_checked(name.as_str(), 0, Reach::Public, LOOKUP_TIMEOUT).await {
                Ok(public) => Ok(Box::new(public.into_iter()) as Addrs),
                Err(refused @ Unreachable::Refused { .. }) => {
                    Err(format!("{refused} (delivery.allow_private_webhooks is off)").into())
                }
                Err(other) => Err(other.into()),
            }
        })
    }
}

/// How long a webhook's name may take to resolve.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn knows_private_hosts_without_resolving() {
        for url in [
            "http://127.0.0.1/",
            "http://[::1]/",
            "http://localhost:9/",
            "http://a.localhost/",
            "http://10.0.0.1/",
            "http://[::ffff:169.254.169.254]/",
        ] {
            assert!(private_host(&Url::parse(url).unwrap()).is_some(), "{url}");
        }
        for url in ["https://example.com/", "http://1.1.1.1/"] {
            assert!(private_host(&Url::parse(url).unwrap()).is_none(), "{url}");
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_at_connect_time() {
        let error = PublicOnly
            .resolve(Name::from_str("localhost").unwrap())
            .await
            .err()
            .expect("localhost resolves only to loopback");
        assert!(
            error.to_string().contains("loopback address: refused"),
            "{error}"
        );
    }
}
