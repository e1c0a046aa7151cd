//! What `flowhost serve` prints on stdout as it starts, and the parser for
//! it, side by side so that they cannot drift: the tests, the bench and
//! scripts read the address and the endpoint URLs from these lines.
//!
//! ```text
//! flowhost 0.1.0 listening on http://127.0.0.1:8080
//!   endpoint support (flow order-help): http://127.0.0.1:8080/endpoint/3f9a…
//!   (`flowhost endpoints` shows the URLs whole)
//! ```

use crate::endpoints::EndpointUrl;

/// One start-up line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// The address served, such as `127.0.0.1:8080`.
    Listening(String),
    /// An endpoint and its URL: whole at the start that generated its
    /// token, else cut after 4 characters of the token (ending in `…`).
    Endpoint {
        /// The endpoint's name.
        name: String,
        /// Its URL, whole or cut.
        url: String,
    },
}

impl StartLine {
    /// The line saying where flowhost listens.
    pub fn listening(addr: std::net::SocketAddr) -> String {
        format!(
            "flowhost {} listening on http://{addr}",
            env!("CARGO_PKG_VERSION")
        )
    }

    /// The line for one endpoint.
    pub fn endpoint(url: &EndpointUrl) -> String {
        let (name, flow) = (&url.name, &url.flow);
        if url.new_token {
            format!(
                "  endpoint {name} (flow {flow}; a new URL, printed whole only now): {}",
                url.url
            )
        } else {
            format!("  endpoint {name} (flow {flow}): {}", url.redacted())
        }
    }

    /// The line after the endpoints, when some URLs were cut.
    pub const WHOLE_URLS: &str = "  (`flowhost endpoints` shows the URLs whole)";

    /// Parses a line of the start-up output; `None` for any other line.
    pub fn parse(line: &str) -> Option<StartLine> {
        if let Some((_, addr)) = line.split_once("listening on http://") {
            return Some(StartLine::Listening(addr.trim().to_owned()));
        }
        let rest = line.trim().strip_prefix("endpoint ")?;
        let name = rest.split_whitespace().next()?.to_owned();
        let url = rest.rsplit(' ').next()?.to_owned();
        Some(StartLine::Endpoint { name, url })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_printed_parses_back() {
        let addr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            StartLine::parse(&StartLine::listening(addr)),
            Some(StartLine::Listening("127.0.0.1:8080".into()))
        );
        for new_token in [true, false] {
            let url = EndpointUrl {
                name: "support".into(),
                flow: "order-help".into(),
                url: "http://127.0.0.1:8080/endpoint/3f9a0c1d2e3f4a5b".into(),
                new_token,
            };
            let shown = if new_token {
                url.url.clone()
            } else {
                url.redacted()
            };
            assert_eq!(
                StartLine::parse(&StartLine::endpoint(&url)),
                Some(StartLine::Endpoint {
                    name: "support".into(),
                    url: shown
                })
            );
        }
        assert_eq!(StartLine::parse(StartLine::WHOLE_URLS), None);
    }
}
