//! TLS at both ends, with rustls and its `ring` provider: toward clients
//! (`tls_listen`: slotgate shows its certificate and may ask for the
//! client's) and toward nodes (`node_tls`: slotgate checks the node's
//! certificate and may show its own). This module turns the PEM files into
//! rustls configurations once, at startup, and wraps sockets in TLS; it
//! neither accepts clients nor speaks RESP.

mod client;
mod node;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use client::{AuthClients, ClientTls, ClientTlsFiles};
pub use node::{NodeStream, NodeTls, NodeTlsFiles};

/// A certificate, key or CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {cause}", file.display())]
    Read { file: PathBuf, cause: std::io::Error },
    #[error("{}: {reason}", file.display())]
    Unusable { file: PathBuf, reason: String },
    /// The files are readable, but rustls refuses them together (a key that
    /// does not match its certificate, say).
    #[error("{what}: {cause}")]
    Refused { what: String, cause: rustls::Error },
    /// Settings that cannot work together.
    #[error("{0}")]
    Invalid(String),
}

/// The one crypto provider: ring (aws-lc-rs would need cmake and nasm). It
/// has no post-quantum key exchange, hence rustls's deprecation note;
/// neither has Redis 7's OpenSSL 3.0.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|cause| TlsError::Read { file: file.to_path_buf(), cause })
}

/// Every certificate in a PEM file, in order (a chain: the leaf first).
fn certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let unusable = |reason: String| TlsError::Unusable { file: file.to_path_buf(), reason };
    let pem = read(file)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(unusable("no certificate in it (expected -----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
fn private_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(file)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Unusable {
        file: file.to_path_buf(),
        reason: format!("no private key in it (expected -----BEGIN PRIVATE KEY-----): {e}"),
    })
}

/// The CA certificates in a PEM file, as trust anchors.
fn trust_anchors(file: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(file)? {
        roots.add(cert).map_err(|e| TlsError::Unusable {
            file: file.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(roots))
}

/// A certificate and its key, as one pair of files.
fn certified_key(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    Ok((certificates(cert)?, private_key(key)?))
}

fn refused(what: &str, cert: &Path, key: &Path) -> impl FnOnce(rustls::Error) -> TlsError {
    let what = format!("{what} ({} with {})", cert.display(), key.display());
    move |cause| TlsError::Refused { what, cause }
}
