//! Running the simulator: on its own thread (tests, the gateway's demo) or in the foreground
//! (`meta-sim`).

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};

use super::config::SandboxConfig;
use super::state::SandboxState;
use super::{routes_control, routes_graph, webhooks};

pub struct Sandbox;

impl Sandbox {
    /// Starts the server on its own OS thread with its own actix System, so it can be used from
    /// `#[tokio::test]` and from inside another actix System; returns once listening.
    pub fn spawn(config: SandboxConfig) -> io::Result<SandboxHandle> {
        Self::spawn_state(SandboxState::new(config), 1)
    }

    /// As [`Sandbox::spawn`], with state prepared beforehand and `workers` actix workers.
    pub fn spawn_state(state: SandboxState, workers: usize) -> io::Result<SandboxHandle> {
        let (tx, rx) = mpsc::channel::<io::Result<(SocketAddr, ServerHandle)>>();
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("sandbox".into())
            .spawn(move || {
                let system = actix_web::rt::System::new();
                system.block_on(async move {
                    let server = match build(thread_state.clone(), workers, true) {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let (server, addr) = server;
                    actix_web::rt::spawn(webhooks::run(thread_state.inner.webhooks.clone()));
                    let _ = tx.send(Ok((addr, server.handle())));
                    if let Err(e) = server.await {
                        tracing::error!(error = %e, "sandbox server stopped with an error");
                    }
                });
            })?;
        match rx.recv() {
            Ok(Ok((addr, server))) => Ok(SandboxHandle {
                addr,
                state,
                server: Some(server),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(io::Error::other("sandbox thread exited before listening")),
        }
    }

    /// Runs in the foreground with `workers` actix workers until Ctrl-C / SIGTERM.
    pub fn serve(state: SandboxState, workers: usize) -> io::Result<()> {
        let system = actix_web::rt::System::new();
        system.block_on(async move {
            let (server, addr) = build(state.clone(), workers, false)?;
            tracing::info!(%addr, "meta-sim listening");
            actix_web::rt::spawn(webhooks::run(state.inner.webhooks.clone()));
            server.await
        })
    }
}

fn build(
    state: SandboxState,
    workers: usize,
    disable_signals: bool,
) -> io::Result<(actix_web::dev::Server, SocketAddr)> {
    let bind = state.config().bind;
    let data = web::Data::new(state);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .configure(routes_control::configure)
            .configure(routes_graph::configure)
    })
    .workers(workers.max(1))
    // Load tests open thousands of keep-alive connections at once.
    .backlog(4096)
    .max_connection_rate(4096)
    .bind(bind)?;
    if disable_signals {
        server = server.disable_signals();
    }
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| io::Error::other("server bound to no address"))?;
    Ok((server.shutdown_timeout(1).run(), addr))
}

/// A running sandbox; stops the server when stopped or dropped.
pub struct SandboxHandle {
    addr: SocketAddr,
    state: SandboxState,
    server: Option<ServerHandle>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SandboxHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl SandboxHandle {
    /// `http://127.0.0.1:PORT`: the Graph base URL (requests go to `{base}/{version}/…`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> SandboxState {
        self.state.clone()
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            // The stop command is sent when `stop` is called; the returned future only waits for
            // completion, which joining the thread below does instead.
            drop(server.stop(false));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
