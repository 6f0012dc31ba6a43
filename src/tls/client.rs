//! TLS toward clients (`tls_listen`): slotgate's certificate, and the
//! client certificates it asks for when `tls_ca_cert_file` is set, as
//! Redis's `tls-auth-clients` says. The handshake runs on the client's
//! worker, never in the accept loop, and within a time limit, so a client
//! that stalls it holds up no one else.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use super::{TlsError, certified_key, provider, refused, trust_anchors};

/// Whether clients must show a certificate signed by `tls_ca_cert_file`,
/// like Redis's `tls-auth-clients`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthClients {
    /// A client without a valid certificate is refused.
    #[default]
    Yes,
    /// No certificate is asked for.
    No,
    /// A certificate is asked for; one that is shown must be valid.
    Optional,
}

/// Where the client side's certificate, key and CA are.
#[derive(Debug, Clone)]
pub struct ClientTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates are checked against it; `None`: not asked for.
    pub ca: Option<PathBuf>,
    pub auth_clients: AuthClients,
    pub handshake_timeout: Duration,
}

/// What the workers need to shake hands with TLS clients.
#[derive(Clone)]
pub struct ClientTls {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("handshake_timeout", &self.handshake_timeout).finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads the files; an error names the file that cannot be used.
    pub fn load(files: &ClientTlsFiles) -> Result<ClientTls, TlsError> {
        let (certs, key) = certified_key(&files.cert, &files.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(format!("TLS versions for clients: {e}")))?;
        let builder = match (&files.ca, files.auth_clients) {
            (Some(ca), auth @ (AuthClients::Yes | AuthClients::Optional)) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(trust_anchors(ca)?, provider());
                let verifier = match auth {
                    AuthClients::Optional => verifier.allow_unauthenticated(),
                    _ => verifier,
                };
                let verifier = verifier.build().map_err(|e| TlsError::Unusable {
                    file: ca.clone(),
                    reason: format!("cannot verify clients with it: {e}"),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).map_err(refused(
            "certificate and key for clients",
            &files.cert,
            &files.key,
        ))?;
        // Clients speak RESP; ALPN is not negotiated (Redis offers none).
        config.alpn_protocols.clear();
        Ok(ClientTls { acceptor: TlsAcceptor::from(Arc::new(config)), handshake_timeout: files.handshake_timeout })
    }

    /// The TLS handshake with a newly accepted client; `None` when it fails
    /// or takes longer than the handshake timeout (logged and counted).
    pub async fn handshake(&self, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
        let peer = stream.peer_addr().ok();
        let failure = match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no handshake within {} ms", self.handshake_timeout.as_millis()),
        };
        crate::metrics::get().tls_handshake_failures.inc();
        tracing::info!(client.addr = ?peer, %failure, "TLS handshake with a client failed");
        None
    }
}
