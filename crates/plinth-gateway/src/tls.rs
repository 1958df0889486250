//! TLS to upstreams (`https://` URLs): rustls with the `ring` provider, TLS 1.2 and 1.3, the
//! system's root certificates plus any CA certificates the operator adds ([`read_ca_file`], e.g.
//! a private CA of in-house model servers).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The DER certificates of a PEM file (one or more `BEGIN CERTIFICATE` blocks). The error names
/// the file and the problem.
pub fn read_ca_file(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&text) {
        let cert =
            cert.map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
        out.push(cert.to_vec());
    }
    if out.is_empty() {
        return Err(format!(
            "{}: no `-----BEGIN CERTIFICATE-----` block found",
            path.display()
        ));
    }
    // Each must be a certificate rustls can use as a trust anchor.
    let mut roots = rustls::RootCertStore::empty();
    for (i, der) in out.iter().enumerate() {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| format!("{}: certificate {}: {e}", path.display(), i + 1))?;
    }
    Ok(out)
}

/// The system's root certificates, read once per process.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if let Some(e) = found.errors.first() {
            tracing::debug!(error = %e, "gateway: some system root certificates were not read");
        }
        found.certs
    })
}

/// The client TLS configuration: the system's roots and `extra_roots` (DER).
pub(crate) fn client_config(extra_roots: &[Vec<u8>]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let _ = roots.add_parsable_certificates(system_roots().iter().cloned());
    for der in extra_roots {
        if let Err(e) = roots.add(CertificateDer::from(der.clone())) {
            tracing::warn!(error = %e, "gateway: an extra CA certificate was not usable");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b,
        // The ring provider supports the default versions; this cannot fail.
        Err(_) => rustls::ClientConfig::builder(),
    };
    // ALPN (http/1.1) is set by the hyper-rustls connector.
    builder.with_root_certificates(roots).with_no_client_auth()
}
