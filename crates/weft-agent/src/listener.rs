//! A manager's TLS listener: weft's own rustls acceptor in front of tonic, so the served
//! certificate can be replaced while weftd runs ([`crate::tls::ServerCert`]) and every
//! connection carries what its client certificate says ([`Peer`]) to the authorization layer.
//! Handshakes run concurrently, each bounded in time, so a client that never finishes one holds
//! up nobody.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::pki::CertIdentity;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at most; more connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;

/// Who is at the other end of a TLS connection, as its certificate (already checked against the
/// cluster CA by rustls) says.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The client certificate's identity; `None` when it sent none (a joining node), or sent one
    /// of this CA that names no role weft knows.
    pub identity: Option<Arc<CertIdentity>>,
}

/// One accepted connection.
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    peer: Peer,
}

impl Connected for TlsConn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The stream of established connections of `listener`, for tonic's `serve_with_incoming`. The
/// accept loop runs as long as the stream is polled and ends with it.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> impl futures::Stream<Item = Result<TlsConn, io::Error>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (tx, rx) = mpsc::channel::<TlsConn>(64);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let accept = async move {
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
            let (tcp, addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let identity = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .and_then(|leaf| match CertIdentity::from_der(leaf) {
                                Ok(identity) => Some(Arc::new(identity)),
                                Err(e) => {
                                    tracing::debug!(%addr, error = %e, "client certificate without a weft identity");
                                    None
                                }
                            });
                        let _ = tx.send(TlsConn { stream, peer: Peer { addr, identity } }).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                }
            });
        }
    };
    let accepted = tokio_stream::wrappers::ReceiverStream::new(rx);
    // The accept loop is polled together with the stream: dropping the stream stops it.
    futures::stream::select(
        futures::stream::once(accept).filter_map(|()| async { None::<Result<TlsConn, io::Error>> }),
        accepted.map(Ok),
    )
}
