//! Fault injection and the request log.
//!
//! - The listener wraps every accepted socket so a handler can **drop its connection**: after the
//!   kill switch is thrown, the next read or write on it fails, hyper gives the connection up and
//!   the socket closes without a single response byte. That is how "commit, then drop the
//!   response" is made real (the client sees a connection closed before any response).
//! - The outer middleware logs every non-admin request ([`super::RequestRecord`]) and applies the
//!   generic faults in this order: added latency, hang (never answer until shutdown), 503 (before
//!   anything else happens: nothing counted, nothing committed).
//! - The endpoint-specific switches live with their endpoints, after the gate (so they are
//!   counted like CC's own answers): `forbidden` in `api.rs`, `signup_conflict_rate` in
//!   `contacts.rs`, `correctable_rate` and `processing_per_1000_rows_ms` in `import.rs`,
//!   `activity_not_found_rate` and `activity_poll_error_rate` in `resources.rs`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::config::LostMode;
use super::state::Shared;

/// A listener whose connections can be killed from a handler.
pub struct KillListener(pub TcpListener);

/// The kill switch of one connection (axum connect-info).
#[derive(Debug, Clone, Default)]
pub struct ConnHandle(Arc<AtomicBool>);

impl ConnHandle {
    /// Close this connection without answering (the response being built is never sent).
    pub fn kill(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub struct KillIo {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
}

fn killed_err() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection dropped by simulator fault",
    )
}

impl AsyncRead for KillIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed_err()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed_err()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed_err()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Listener for KillListener {
    type Io = KillIo;
    type Addr = ConnHandle;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    let h = ConnHandle::default();
                    return (
                        KillIo {
                            inner: s,
                            killed: h.0.clone(),
                        },
                        h,
                    );
                }
                // Out of file descriptors and the like: back off briefly, as axum's own does.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ConnHandle::default())
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, KillListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, KillListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Per-request context handlers find in the request extensions.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Index of this request's [`super::RequestRecord`].
    pub seq: u64,
    pub conn: ConnHandle,
}

/// 503 body in CC's array form (reference §7).
pub fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/json")],
        r#"[{"error_key":"server.unavailable","error_message":"Our internal service is temporarily unavailable."}]"#,
    )
        .into_response()
}

/// Hang until shutdown, then drop the connection.
pub async fn hang(sh: &Shared, ctx: &Ctx) -> Response {
    sh.shutdown.cancelled().await;
    ctx.conn.kill();
    unavailable()
}

/// Lose the response of an already committed request.
pub async fn lose(sh: &Shared, ctx: &Ctx, mode: LostMode) -> Response {
    sh.log_update(ctx.seq, |r| {
        r.fault = Some(
            if mode == LostMode::Drop {
                "drop"
            } else {
                "lost_hang"
            }
            .into(),
        )
    });
    match mode {
        LostMode::Drop => {
            ctx.conn.kill();
            Response::new(Body::empty())
        }
        LostMode::Hang => hang(sh, ctx).await,
    }
}

/// Outer middleware: request log + generic faults. Admin calls (`/_sim/…`) are neither logged
/// nor faulted.
pub async fn outer(
    State(sh): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with("/_sim") {
        return next.run(req).await;
    }
    let seq = sh.log_arrival(req.method().as_str(), &path);
    let ctx = Ctx { seq, conn };
    req.extensions_mut().insert(ctx.clone());
    let f = sh.faults();
    if f.path_prefix.as_deref().is_none_or(|p| path.starts_with(p)) {
        if f.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
        }
        if sh.chance(f.hang_rate) {
            sh.log_update(seq, |r| r.fault = Some("hang".into()));
            return hang(&sh, &ctx).await;
        }
        if sh.chance(f.error_rate) {
            sh.log_update(seq, |r| {
                r.fault = Some("error".into());
                r.status = Some(503);
                r.error = Some("server.unavailable".into());
            });
            return unavailable();
        }
    }
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    sh.log_update(seq, |r| {
        if !matches!(r.fault.as_deref(), Some("drop" | "lost_hang" | "hang")) {
            r.status = Some(status);
        }
    });
    resp
}
