//! TLS for outgoing HTTPS: rustls with the ring provider (no C toolchain
//! beyond what wasmtime needs) and the system's root certificates.

/// Installs ring as rustls's process-wide crypto provider, once.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider was installed first, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
