//! The allow-list of outbound hosts: `scheme://host[:port]` entries, with
//! `*` for the scheme or port, `*.domain` for subdomains and `*` for any
//! host, the way Spin's `allowed_outbound_hosts` reads. A flow's manifest
//! lists what it may call; `runtime.private_outbound_hosts` what it may
//! reach on private addresses. `outbound` checks requests against them.

/// An entry of an allow-list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?}: {problem}")]
pub struct BadHostEntry {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// The hosts a flow may send HTTP requests to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    rules: Vec<HostRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HostRule {
    scheme: Option<&'static str>,
    host: HostPattern,
    port: PortRule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// One host, named exactly.
    Exact(String),
    /// `*.example.com`: any subdomain.
    Subdomains(String),
    /// `*`: any host (public addresses only).
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortRule {
    /// The scheme's own port (80 or 443).
    Default,
    Exact(u16),
    Any,
}

impl AllowedHosts {
    /// Parses `allowed_outbound_hosts` entries; the error names the entry.
    pub fn parse(entries: &[String]) -> Result<AllowedHosts, BadHostEntry> {
        let rules = entries
            .iter()
            .map(|entry| {
                HostRule::parse(entry).map_err(|problem| BadHostEntry {
                    entry: entry.clone(),
                    problem,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(AllowedHosts { rules })
    }

    /// Whether a request to this scheme, host and port is allowed.
    pub(super) fn check(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.rules
            .iter()
            .any(|rule| rule.matches(scheme, &host, port))
    }
}

impl HostRule {
    fn parse(entry: &str) -> Result<HostRule, &'static str> {
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or("write scheme://host, such as https://api.example.com")?;
        let scheme = match scheme {
            "http" => Some("http"),
            "https" => Some("https"),
            "*" => None,
            _ => return Err("the scheme must be http, https or *"),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('@') || rest.contains('?') {
            return Err("give a scheme, a host and a port only");
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port))
                if !port.contains(']') && !host.is_empty() && !host.ends_with(':') =>
            {
                let port = match port {
                    "*" => PortRule::Any,
                    _ => {
                        PortRule::Exact(port.parse().map_err(|_| "the port must be a number or *")?)
                    }
                };
                (host, port)
            }
            _ => (rest, PortRule::Default),
        };
        let host = host.to_ascii_lowercase();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let pattern = if host == "*" {
            HostPattern::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                return Err("a wildcard host is *.domain");
            }
            HostPattern::Subdomains(format!(".{domain}"))
        } else if host.is_empty() || host.contains('*') {
            return Err("a host is a name, an IP address, *.domain or *");
        } else {
            HostPattern::Exact(host.to_owned())
        };
        Ok(HostRule {
            scheme,
            host: pattern,
            port,
        })
    }

    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme.is_none_or(|s| s == scheme);
        let host_ok = match &self.host {
            HostPattern::Exact(exact) => exact == host,
            HostPattern::Subdomains(suffix) => host.ends_with(suffix.as_str()),
            HostPattern::Any => true,
        };
        let port_ok = match self.port {
            PortRule::Any => true,
            PortRule::Exact(p) => p == port,
            PortRule::Default => port == default_port(scheme),
        };
        scheme_ok && host_ok && port_ok
    }
}

pub(super) fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn matches_scheme_host_and_port() {
        let allowed = hosts(&[
            "https://api.example.com",
            "http://127.0.0.1:8080",
            "https://*.example.org",
        ]);
        assert!(allowed.check("https", "api.example.com", 443));
        assert!(allowed.check("https", "API.Example.com", 443));
        assert!(!allowed.check("http", "api.example.com", 80), "scheme");
        assert!(!allowed.check("https", "api.example.com", 8443), "port");
        assert!(allowed.check("http", "127.0.0.1", 8080));
        assert!(!allowed.check("http", "127.0.0.1", 8081));
        assert!(allowed.check("https", "a.b.example.org", 443));
        assert!(
            !allowed.check("https", "example.org", 443),
            "*.x is subdomains only"
        );
        assert!(!allowed.check("https", "evil-example.org", 443));
        assert!(
            !hosts(&[]).check("https", "api.example.com", 443),
            "deny by default"
        );
    }

    #[test]
    fn wildcards_for_scheme_host_and_port() {
        let allowed = hosts(&["*://example.com:*", "https://*"]);
        assert!(allowed.check("http", "example.com", 1234));
        assert!(allowed.check("https", "anything.net", 443));
        assert!(!allowed.check("http", "anything.net", 80));
        let ipv6 = hosts(&["http://[::1]:9000"]);
        assert!(ipv6.check("http", "[::1]", 9000));
    }

    #[test]
    fn rejects_malformed_entries() {
        for bad in [
            "api.example.com",
            "ftp://x.com",
            "https://x.com/path",
            "https://x.com:port",
            "https://*x.com",
            "https://user@x.com",
        ] {
            assert!(AllowedHosts::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
