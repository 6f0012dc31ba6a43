//! The client's socket as the session loop reads and writes it: the two
//! halves of a plain TCP stream (borrowed, lock-free), or of a TLS stream.
//! Only what differs between the two lives here.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::{TcpStream, tcp};
use tokio_rustls::server::TlsStream;

/// The read half of a client connection.
pub(super) trait ClientRead: AsyncRead + Unpin + Send {
    /// Waits until input may have arrived, without a buffer: so an idle
    /// plain client holds no read buffer. A TLS stream decrypts into
    /// buffers of its own anyway: ready at once.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

/// The write half of a client connection.
pub(super) trait ClientWrite: AsyncWrite + Unpin + Send {
    /// Bytes written may wait in the stream (TLS records) until a flush.
    const BUFFERS: bool;
}

impl ClientRead for tcp::ReadHalf<'_> {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        tcp::ReadHalf::readable(self)
    }
}

impl ClientWrite for tcp::WriteHalf<'_> {
    const BUFFERS: bool = false;
}

impl ClientRead for ReadHalf<TlsStream<TcpStream>> {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

impl ClientWrite for WriteHalf<TlsStream<TcpStream>> {
    const BUFFERS: bool = true;
}
