//! The MLLP listener: its own TCP port (optionally TLS), many messages per connection, one ACK
//! per message in order. Bounded everywhere: connections (one over the limit is accepted and
//! closed at once), frame size (an oversized frame gets an AR and the connection carries on),
//! idle time between frames, and the time a frame may take to arrive (slow-loris guard).
//!
//! The accept loop runs on the node's main arbiter; connections are spread over their own
//! arbiters (threads), so parsing and ACKs do not compete with the HTTP workers' threads.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hl7_v2::mllp::{MllpCodec, MllpError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::rustls;
use tokio_util::codec::{Decoder, Encoder};

use super::service::Hl7Service;
use crate::clinical::Clinical;
use crate::config::Settings;
use crate::metrics::Metrics;

/// The running listener; dropping it stops accepting and stops its threads.
pub struct MllpHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    arbiters: Vec<actix::Arbiter>,
}

impl MllpHandle {
    /// The bound address (port 0 in the settings picks a free port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MllpHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for a in &self.arbiters {
            a.stop();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("could not bind the MLLP port {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("MLLP TLS: {0}")]
    Tls(String),
}

#[derive(Clone)]
struct ConnSettings {
    idle: Duration,
    read: Duration,
    frame_limit: usize,
}

/// Binds `mllp.bind` and serves until the handle is dropped; `None` when MLLP is disabled.
/// Call from inside the actix system (it starts arbiters).
pub fn spawn(clinical: Clinical, settings: &Settings) -> Result<Option<MllpHandle>, ListenerError> {
    let m = &settings.mllp;
    if !m.enabled {
        return Ok(None);
    }
    let bind_err = |source| ListenerError::Bind {
        addr: m.bind,
        source,
    };
    let std_listener = std::net::TcpListener::bind(m.bind).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let addr = std_listener.local_addr().map_err(bind_err)?;
    let tls = match (&m.tls_cert, &m.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let metrics = clinical.metrics.clone();
    let service = Arc::new(Hl7Service::new(
        clinical,
        settings.documents.max_pdf_bytes,
        Duration::from_secs(m.dedupe_ttl_secs),
    ));
    let workers = match m.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let arbiters: Vec<actix::Arbiter> = (0..workers).map(|_| actix::Arbiter::new()).collect();
    let handles: Vec<actix::ArbiterHandle> = arbiters.iter().map(|a| a.handle()).collect();
    let (stop, stopped) = watch::channel(false);
    let conn = ConnSettings {
        idle: Duration::from_secs(m.idle_timeout_secs),
        read: Duration::from_secs(m.read_timeout_secs),
        frame_limit: m.frame_limit_bytes,
    };
    let limit = m.max_connections;
    actix::spawn(accept_loop(
        std_listener,
        stopped,
        handles,
        service,
        tls,
        conn,
        limit,
        metrics,
    ));
    tracing::info!(%addr, tls = m.tls_cert.is_some(), "MLLP listener started");
    Ok(Some(MllpHandle {
        addr,
        stop,
        arbiters,
    }))
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    std_listener: std::net::TcpListener,
    mut stopped: watch::Receiver<bool>,
    handles: Vec<actix::ArbiterHandle>,
    service: Arc<Hl7Service>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    conn: ConnSettings,
    limit: usize,
    metrics: Metrics,
) {
    let listener = match TcpListener::from_std(std_listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "MLLP listener could not start");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(limit));
    let mut next = 0usize;
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "MLLP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics
                .hl7_connections
                .with_label_values(&["refused"])
                .inc();
            tracing::warn!(%peer, limit, "MLLP connection refused: too many connections");
            drop(stream);
            continue;
        };
        metrics
            .hl7_connections
            .with_label_values(&["accepted"])
            .inc();
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "MLLP connection could not be handed over");
                continue;
            }
        };
        let Some(handle) = handles.get(next % handles.len().max(1)) else {
            break;
        };
        next = next.wrapping_add(1);
        let (service, tls, conn, metrics) =
            (service.clone(), tls.clone(), conn.clone(), metrics.clone());
        handle.spawn(async move {
            let _permit = permit;
            match TcpStream::from_std(std_stream) {
                Ok(s) => serve(s, peer, service, tls, conn, metrics).await,
                Err(e) => tracing::warn!(error = %e, "MLLP connection could not be registered"),
            }
        });
    }
    tracing::info!("MLLP listener stopped");
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    service: Arc<Hl7Service>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    conn: ConnSettings,
    metrics: Metrics,
) {
    let _ = stream.set_nodelay(true);
    tracing::debug!(%peer, "MLLP connection opened");
    let end = match tls {
        Some(acceptor) => match tokio::time::timeout(conn.read, acceptor.accept(stream)).await {
            Ok(Ok(s)) => connection(s, peer.ip(), &service, &conn).await,
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "MLLP TLS handshake failed");
                End::TlsFailed
            }
            Err(_) => End::TlsFailed,
        },
        None => connection(stream, peer.ip(), &service, &conn).await,
    };
    if let Some(label) = end.label() {
        metrics.hl7_connections.with_label_values(&[label]).inc();
    }
    tracing::debug!(%peer, how = ?end, "MLLP connection closed");
}

#[derive(Debug)]
enum End {
    Closed,
    Idle,
    SlowFrame,
    TlsFailed,
    Io,
}

impl End {
    fn label(&self) -> Option<&'static str> {
        match self {
            End::Closed | End::Io => None,
            End::Idle => Some("idle-timeout"),
            End::SlowFrame => Some("read-timeout"),
            End::TlsFailed => Some("tls-failed"),
        }
    }
}

/// Reads frames and answers each, in order, until the peer closes or a timeout fires.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    peer: IpAddr,
    service: &Hl7Service,
    conn: &ConnSettings,
) -> End {
    let mut codec = MllpCodec::new(conn.frame_limit);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::new();
    let mut frame_started: Option<Instant> = None;
    loop {
        loop {
            let reply = match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    frame_started = None;
                    match service.handle(&frame, peer).await {
                        Some(o) => o.ack,
                        None => continue,
                    }
                }
                Ok(None) => break,
                Err(MllpError::FrameTooLarge { limit }) => {
                    tracing::warn!(%peer, limit, "MLLP frame over the limit");
                    frame_started = None;
                    service.frame_too_large(limit).ack
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "MLLP framing error");
                    return End::Io;
                }
            };
            out.clear();
            if codec.encode(&reply, &mut out).is_err() {
                return End::Io;
            }
            match tokio::time::timeout(conn.read, async {
                io.write_all(&out).await?;
                io.flush().await
            })
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return End::Io,
                Err(_) => return End::SlowFrame,
            }
        }
        // The decoder keeps only an unfinished frame (junk is dropped as it arrives).
        let wait = if buf.is_empty() {
            frame_started = None;
            conn.idle
        } else {
            let started = *frame_started.get_or_insert_with(Instant::now);
            conn.read.saturating_sub(started.elapsed())
        };
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(64 * 1024);
        }
        match tokio::time::timeout(wait, io.read_buf(&mut buf)).await {
            Err(_) if frame_started.is_some() => {
                tracing::warn!(%peer, "MLLP frame not completed in time; closing");
                return End::SlowFrame;
            }
            Err(_) => return End::Idle,
            Ok(Ok(0)) => {
                let _ = codec.decode_eof(&mut buf);
                let _ = io.shutdown().await;
                return End::Closed;
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return End::Io,
        }
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, ListenerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| ListenerError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ListenerError::Tls(format!(
            "{}: no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ListenerError::Tls(format!("{}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ListenerError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| ListenerError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
