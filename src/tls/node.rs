//! TLS toward nodes (`node_tls`): the CA their certificates must chain to,
//! the name they must carry (`node_tls_server_name`, else the node's host
//! as the cluster announces it), the certificate slotgate shows nodes that
//! set `tls-auth-clients`; and [`NodeStream`], the socket every node
//! connection and topology query reads and writes, plain or TLS.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::{TlsError, certified_key, provider, refused, trust_anchors};

/// Where the node side's CA, client certificate and key are, and how
/// nodes are named.
#[derive(Debug, Clone, Default)]
pub struct NodeTlsFiles {
    /// Node certificates must chain to it; `None` only with `insecure_skip_verify`.
    pub ca: Option<PathBuf>,
    /// The certificate and key shown to nodes that ask for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The name every node's certificate must carry; `None`: the node's own host.
    pub server_name: Option<String>,
    /// Accept any certificate (tests only).
    pub insecure_skip_verify: bool,
}

/// What node connections need to open TLS sessions.
pub struct NodeTls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Reads the files; an error names the file that cannot be used.
    pub fn load(files: &NodeTlsFiles) -> Result<NodeTls, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(format!("TLS versions for nodes: {e}")))?;
        let builder = match (&files.ca, files.insecure_skip_verify) {
            (_, true) => {
                tracing::warn!("node_tls_insecure_skip_verify: node certificates are not checked; for tests only");
                builder.dangerous().with_custom_certificate_verifier(Arc::new(SkipVerify(provider())))
            }
            (Some(ca), false) => builder.with_root_certificates(trust_anchors(ca)?),
            (None, false) => {
                return Err(TlsError::Invalid("node_tls needs node_tls_ca_cert_file".into()));
            }
        };
        let config = match &files.client_cert {
            Some((cert, key)) => {
                let (certs, private) = certified_key(cert, key)?;
                builder.with_client_auth_cert(certs, private).map_err(refused(
                    "certificate and key for nodes",
                    cert,
                    key,
                ))?
            }
            None => builder.with_no_client_auth(),
        };
        let server_name = match &files.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|e| TlsError::Invalid(format!("node_tls_server_name {name:?}: {e}")))?,
            ),
            None => None,
        };
        Ok(NodeTls { connector: TlsConnector::from(Arc::new(config)), server_name })
    }

    /// The name `host`'s certificate must carry.
    fn name_for(&self, host: &str) -> Result<ServerName<'static>, String> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string())
                .map_err(|e| format!("{host:?} cannot be checked against a certificate: {e}")),
        }
    }
}

/// A connection to a node: plain TCP, or TLS over it.
pub enum NodeStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl NodeStream {
    /// Connects to `addr` (`host:port`), with a TLS handshake when `tls` is
    /// given, all within `limit`. The error says what failed.
    pub async fn connect(addr: &str, tls: Option<&NodeTls>, limit: Duration) -> Result<NodeStream, String> {
        let open = async {
            let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            let Some(tls) = tls else { return Ok(NodeStream::Plain(stream)) };
            let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
            let stream = tls
                .connector
                .connect(tls.name_for(host)?, stream)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            Ok(NodeStream::Tls(Box::new(stream)))
        };
        tokio::time::timeout(limit, open).await.map_err(|_| format!("connect timed out after {limit:?}"))?
    }

    /// Bytes written are still held in TLS records, not yet on the socket:
    /// the connection must be flushed even when there is nothing more to write.
    pub fn wants_flush(&self) -> bool {
        match self {
            NodeStream::Plain(_) => false,
            NodeStream::Tls(stream) => stream.get_ref().1.wants_write(),
        }
    }
}

impl AsyncRead for NodeStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            NodeStream::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NodeStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NodeStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            NodeStream::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    // A batch of requests with a large one among them goes in one writev.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NodeStream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            NodeStream::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            NodeStream::Plain(stream) => stream.is_write_vectored(),
            NodeStream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            NodeStream::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            NodeStream::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

/// `node_tls_insecure_skip_verify`: any certificate is taken, though the
/// handshake's signatures are still checked (the session stays encrypted,
/// just not authenticated).
#[derive(Debug)]
struct SkipVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
