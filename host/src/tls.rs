//! TLS for outgoing HTTPS, webhook deliveries and flows' outbound requests
//! alike: rustls with the ring provider (no C toolchain beyond what wasmtime
//! needs), and one trust store for both, the system's, through
//! rustls-platform-verifier. An operator's own CA, installed the way the
//! system installs CAs, is trusted the way curl trusts it; a machine with no
//! CA certificates (a bare container) has to be given them.

/// Installs ring as rustls's process-wide crypto provider, once.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider was installed first, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client configuration that verifies servers against the system's trust
/// store and offers `alpn` (such as `[b"h2", b"http/1.1"]`).
pub fn client_config(alpn: &[&[u8]]) -> Result<rustls::ClientConfig, rustls::Error> {
    use rustls_platform_verifier::BuilderVerifierExt;
    install_crypto_provider();
    let mut config = rustls::ClientConfig::builder()
        .with_platform_verifier()?
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
