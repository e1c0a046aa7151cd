//! Which IP addresses are not on the public internet.
//!
//! Flows' outbound HTTP and webhook delivery both refuse to connect to such
//! addresses unless told otherwise: a URL that points (or resolves) at
//! loopback, a private network or a cloud metadata service is the classic
//! way to make a server attack its own neighbourhood (SSRF). The check is
//! made on the address actually connected to, after DNS, so a name that
//! resolves differently the second time (DNS rebinding) gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Where a connection may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Public addresses only.
    Public,
    /// Loopback and private networks too, where the operator allows them;
    /// never link-local addresses (cloud metadata) nor non-destinations.
    Private,
}

/// Why `ip` may not be connected to under `reach`, or `None` if it may.
pub(crate) fn refused(ip: IpAddr, reach: Reach) -> Option<&'static str> {
    never_reachable(ip).or_else(|| match reach {
        Reach::Public => restricted(ip),
        Reach::Private => None,
    })
}

/// Why a host gave no address to connect to.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unreachable {
    /// The lookup took longer than it was given.
    #[error("{host} did not resolve in time")]
    Timeout {
        /// The host looked up.
        host: String,
    },
    /// The lookup failed.
    #[error("{host} did not resolve: {source}")]
    Lookup {
        /// The host looked up.
        host: String,
        /// What the resolver said.
        source: std::io::Error,
    },
    /// The name has no address.
    #[error("{host} did not resolve")]
    NotFound {
        /// The host looked up.
        host: String,
    },
    /// Every address it has is refused.
    #[error("{host} resolves to {address}, a {reason} address: refused")]
    Refused {
        /// The host looked up.
        host: String,
        /// One of its addresses.
        address: IpAddr,
        /// Why that address is refused.
        reason: &'static str,
    },
}

/// The addresses of `host:port` that `reach` allows, in the resolver's
/// order; a literal address is checked the same way. This is the one check
/// that flows' outbound HTTP and webhook delivery both make, on the very
/// addresses they then connect to.
pub(crate) async fn resolve_checked(
    host: &str,
    port: u16,
    reach: Reach,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, Unreachable> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let found = match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Err(_) => return Err(Unreachable::Timeout { host: host.into() }),
        Ok(Err(source)) => {
            return Err(Unreachable::Lookup {
                host: host.into(),
                source,
            });
        }
        Ok(Ok(found)) => found,
    };
    let mut refusal = None;
    let allowed: Vec<SocketAddr> = found
        .filter(|address| match refused(address.ip(), reach) {
            Some(reason) => {
                refusal = Some((address.ip(), reason));
                false
            }
            None => true,
        })
        .collect();
    match (allowed.is_empty(), refusal) {
        (false, _) => Ok(allowed),
        (true, Some((address, reason))) => Err(Unreachable::Refused {
            host: host.into(),
            address,
            reason,
        }),
        (true, None) => Err(Unreachable::NotFound { host: host.into() }),
    }
}

/// Why `ip` is not a public address, or `None` if it is one.
pub(crate) fn restricted(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => restricted_v4(v4),
            None => restricted_v6(v6),
        },
    }
}

/// Why no flow may ever reach `ip`, whatever its manifest or the operator
/// allows: link-local addresses (cloud metadata services answer on
/// 169.254.169.254 and fd00:ec2::254), in any form that embeds one, and
/// addresses that are no destination at all.
pub(crate) fn never_reachable(ip: IpAddr) -> Option<&'static str> {
    let v4 = |v4: Ipv4Addr| {
        if v4.is_link_local() {
            Some("link-local (and cloud metadata)")
        } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() {
            Some("not a destination")
        } else {
            None
        }
    };
    match ip {
        IpAddr::V4(ip) => v4(ip),
        IpAddr::V6(ip) => {
            let s = ip.segments();
            // 64:ff9b::a.b.c.d, the well-known NAT64 prefix (RFC 6052).
            let nat64 = matches!(s, [0x64, 0xff9b, 0, 0, 0, 0, ..])
                .then(|| Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])));
            match embedded_v4(ip).or(nat64) {
                Some(embedded) => v4(embedded),
                None if s[0] & 0xffc0 == 0xfe80 => Some("link-local"),
                None if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => {
                    Some("cloud metadata")
                }
                None if ip.is_unspecified() || ip.is_multicast() => Some("not a destination"),
                None => None,
            }
        }
    }
}

/// The IPv4 address inside an IPv6 address that carries one, when a
/// connection to the IPv6 address may reach the IPv4 one: through the
/// kernel (mapped and compatible forms), a SIIT translator, or a 6to4
/// relay.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |high: u16, low: u16| Some(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)));
    match s {
        // ::ffff:a.b.c.d (mapped) and ::ffff:0:a.b.c.d (SIIT, RFC 7915).
        [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0xffff, 0, ..] => v4(s[6], s[7]),
        // ::a.b.c.d (compatible, deprecated); not :: and ::1 themselves.
        [0, 0, 0, 0, 0, 0, ..] if !ip.is_unspecified() && !ip.is_loopback() => v4(s[6], s[7]),
        // 2002:aabb:ccdd::/48 is the 6to4 prefix of a.b.c.d (RFC 3056).
        [0x2002, ..] => v4(s[1], s[2]),
        _ => None,
    }
}

fn restricted_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        (0, _, _) => "this network (0.0.0.0/8)",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        (169, 254, _) => "link-local (and cloud metadata)",
        (100, 64..=127, _) => "shared address space (CGNAT)",
        (192, 0, 0) => "IETF protocol assignments",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        _ if ip.is_multicast() => "multicast",
        (240..=255, _, _) => "reserved or broadcast",
        _ => return None,
    })
}

fn restricted_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(match first {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_multicast() => "multicast",
        0xfc00..=0xfdff => "unique local (private)",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local (deprecated)",
        0x2001 if ip.segments()[1] == 0x0db8 => "documentation",
        // Teredo (RFC 4380) hides the client's IPv4 address, obfuscated, in
        // the last 32 bits; a relay may deliver to it. Nothing needs a
        // webhook or an API on a Teredo address today.
        0x2001 if ip.segments()[1] == 0 => "Teredo (2001::/32)",
        0x0064 if ip.segments()[1] == 0xff9b => "NAT64",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

    #[tokio::test]
    async fn a_name_is_checked_on_the_addresses_it_resolves_to() {
        let refused = resolve_checked("localhost", 80, Reach::Public, WAIT).await;
        assert!(
            matches!(
                refused,
                Err(Unreachable::Refused {
                    reason: "loopback",
                    ..
                })
            ),
            "{refused:?}"
        );
        let allowed = resolve_checked("127.0.0.1", 80, Reach::Private, WAIT)
            .await
            .unwrap();
        assert_eq!(allowed, ["127.0.0.1:80".parse().unwrap()]);
        for metadata in [
            "169.254.169.254",
            "[fd00:ec2::254]",
            "[::ffff:169.254.169.254]",
        ] {
            let refused = resolve_checked(metadata, 80, Reach::Private, WAIT).await;
            assert!(
                matches!(refused, Err(Unreachable::Refused { .. })),
                "{metadata}: {refused:?}"
            );
        }
    }

    use super::*;

    #[test]
    fn link_local_and_metadata_addresses_are_never_reachable_in_any_form() {
        for refused in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "::ffff:0:a9fe:a9fe",
            "2002:a9fe:a9fe::",
            "64:ff9b::a9fe:a9fe",
            "0.0.0.0",
            "255.255.255.255",
            "::",
        ] {
            assert!(
                never_reachable(refused.parse().unwrap()).is_some(),
                "{refused}"
            );
        }
        // Loopback and private ones are the operator's to allow.
        for allowable in ["127.0.0.1", "10.0.0.1", "::1", "93.184.216.34"] {
            assert_eq!(
                never_reachable(allowable.parse().unwrap()),
                None,
                "{allowable}"
            );
        }
    }

    #[test]
    fn refuses_every_non_public_form() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            // SIIT: ::ffff:0:a.b.c.d
            "::ffff:0:7f00:1",
            "::ffff:0:a00:1",
            // 6to4: 2002:<v4>::/48
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:101:1::1",
            // Teredo, whatever it embeds.
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            "2001::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(restricted(ip).is_some(), "{ip} should be restricted");
        }
    }

    #[test]
    fn allows_public_addresses() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            // The same embeddings of a public address are public.
            "::ffff:0:101:101",
            "2002:101:101::1",
            // 2001:db8::/32 and Teredo aside, 2001::/16 is ordinary.
            "2001:4860:4860::8888",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(restricted(ip), None, "{ip} is public");
        }
    }
}
