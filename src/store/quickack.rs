//! The TCP connector for plain-HTTP S3 endpoints (a Garage, MinIO or
//! s3s-fs on the local network): every connection acknowledges each
//! segment at once (`TCP_QUICKACK`, armed again before every read).
//!
//! Why: servers that leave Nagle's algorithm on (no `TCP_NODELAY`; Garage
//! and s3s-fs among them) send a response's head and then hold its body
//! back until the head is acknowledged, and Linux delays that
//! acknowledgement by up to 40 ms. A GET of a small object then takes
//! 40 ms instead of under one: a download of many thumbnails is bound by
//! the delayed ACK, not by the network. The kernel drops out of quick-ACK
//! mode on its own, hence the re-arming before each read. HTTPS endpoints
//! keep the SDK's default client.
//!
//! It must never change what is sent: it only sets socket options.

use hyper_014::client::connect::{Connected, Connection};
use hyper_014::client::HttpConnector;
use hyper_014::service::Service;
use hyper_014::Uri;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects like hyper's own connector, then hands out quick-ACK streams.
#[derive(Clone)]
pub struct QuickAckConnector {
    inner: HttpConnector,
}

impl QuickAckConnector {
    pub fn new() -> QuickAckConnector {
        let mut inner = HttpConnector::new();
        // Our own small writes (a request's head) go out at once too.
        inner.set_nodelay(true);
        inner.enforce_http(true);
        // The SDK sets its own too; small uploads have only this one.
        inner.set_connect_timeout(Some(super::s3::CONNECT_TIMEOUT));
        QuickAckConnector { inner }
    }
}

impl Default for QuickAckConnector {
    fn default() -> Self {
        QuickAckConnector::new()
    }
}

impl Service<Uri> for QuickAckConnector {
    type Response = QuickAckStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<QuickAckStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            let stream = connecting.await?;
            Ok(QuickAckStream::new(stream))
        })
    }
}

/// A TCP stream that acknowledges at once whatever it receives.
pub struct QuickAckStream {
    stream: TcpStream,
}

/// Arms quick-ACK mode on `stream`, for its next read; a socket that
/// refuses it just keeps the kernel's delayed acknowledgements.
pub(super) fn arm(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_quickack(true);
}

impl QuickAckStream {
    fn new(stream: TcpStream) -> QuickAckStream {
        let s = QuickAckStream { stream };
        s.arm();
        s
    }

    fn arm(&self) {
        arm(&self.stream);
    }
}

impl AsyncRead for QuickAckStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.arm();
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuickAckStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
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

impl Connection for QuickAckStream {
    fn connected(&self) -> Connected {
        self.stream.connected()
    }
}
