//! The store's connections: a few multiplexed connections to one Redis server, or one cluster
//! connection to a Redis Cluster, behind one [`Conn`] the rest of the store uses unchanged.
//!
//! `redis+cluster://[user:password@]host1:port1,host2:port2/` selects the cluster: the listed
//! nodes are only the seeds, the client learns the slot map from them and follows `MOVED` /
//! `ASK`. Every multi-key command, pipeline and script of the store stays within one hash tag
//! (see [`super::keys`]), so each runs on a single node. Batches that span tags (the directory
//! refresh) go through [`Connections::cross_slot`], which pipelines on one server and fans out
//! on a cluster.
//!
//! Why not deadpool-redis: its pool checks each connection out with `UNWATCH` + `PING`, which
//! doubled the Redis commands per message in the end-to-end benchmark; the redis crate's
//! `ConnectionManager` and cluster connection already multiplex and reconnect by themselves.
//!
//! Why per thread: a multiplexed connection's driver runs on the runtime that first used it. A
//! shared pool put every driver on the main thread, so each command from an HTTP worker, an MLLP
//! or a dispatch arbiter crossed to the main thread and its answer crossed back: two wake-ups
//! per command, a third of the gateway's CPU in the kernel under load (BENCHMARKS.md). Each
//! thread now drives its own connections, so a command and its answer stay on the thread that
//! asked, and the commands of all its tasks share one socket write.

use std::cell::RefCell;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisFuture, Value};
use futures::StreamExt;
use tokio::sync::OnceCell;

/// The URL scheme that selects Redis Cluster.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Cross-slot commands in flight at once on a cluster.
const FAN_OUT: usize = 64;

/// A connection of the store: to one server, or to the cluster.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where the store's connections go.
pub(super) enum Connections {
    /// One server: `per_thread` multiplexed connections on every thread that uses the store.
    Single(Box<PerThread>),
    /// Connected on first use (the cluster client reads the slot map when it connects, and the
    /// store is built before the runtime runs), then shared: it multiplexes per node.
    Cluster {
        client: Box<ClusterClient>,
        conn: OnceCell<ClusterConnection>,
    },
}

/// A connection to `url` outside any store (tools and tests that read keys directly): to one
/// server, or to the cluster for a `redis+cluster://` URL.
pub async fn raw(url: &str) -> Result<Conn, ::redis::RedisError> {
    match Connections::open(url, 1, 1, Duration::from_secs(5))? {
        // Not cached on this thread: the caller owns it, and it closes when the caller drops it.
        Connections::Single(p) => {
            ConnectionManager::new_lazy_with_config(p.client, p.config).map(Conn::Single)
        }
        cluster => cluster.get().await,
    }
}

/// The seed nodes of a `redis+cluster://` URL as plain `redis://` URLs; `None` for other URLs.
pub(super) fn cluster_nodes(url: &str) -> Option<Result<Vec<String>, String>> {
    let rest = url.strip_prefix(CLUSTER_SCHEME)?;
    let rest = rest.trim_end_matches('/');
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{auth}{h}/"))
        .collect();
    Some(if nodes.is_empty() {
        Err(format!("{url}: no cluster nodes listed"))
    } else {
        Ok(nodes)
    })
}

impl Connections {
    /// Connections for `url`, opened lazily; `pool_size` multiplexed connections for one server
    /// (at most `max`), one cluster connection for a cluster.
    pub(super) fn open(
        url: &str,
        pool_size: usize,
        max: usize,
        io_timeout: Duration,
    ) -> Result<Connections, ::redis::RedisError> {
        if let Some(nodes) = cluster_nodes(url) {
            let nodes = nodes.map_err(|e| {
                ::redis::RedisError::from((
                    ::redis::ErrorKind::InvalidClientConfig,
                    "bad cluster URL",
                    e,
                ))
            })?;
            let client = ClusterClient::builder(nodes)
                .connection_timeout(io_timeout)
                .response_timeout(io_timeout)
                .retries(3)
                .build()?;
            return Ok(Connections::Cluster {
                client: Box::new(client),
                conn: OnceCell::new(),
            });
        }
        let client = ::redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(io_timeout))
            .set_connection_timeout(Some(io_timeout))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        Ok(Connections::Single(Box::new(PerThread {
            client,
            config,
            per_thread: pool_size.clamp(1, max),
            owner: Arc::new(()),
        })))
    }

    /// A connection: one of this thread's (see [`PerThread`]), or the cluster's.
    pub(super) async fn get(&self) -> Result<Conn, ::redis::RedisError> {
        match self {
            Connections::Single(p) => p.get().map(Conn::Single),
            Connections::Cluster { client, conn } => conn
                .get_or_try_init(|| client.get_async_connection())
                .await
                .cloned()
                .map(Conn::Cluster),
        }
    }

    /// True on a Redis Cluster.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Connections::Cluster { .. })
    }

    /// Runs single-key commands whose keys may lie in different slots; the replies in order.
    /// One pipeline on one server; on a cluster each command goes to its node, [`FAN_OUT`] at a
    /// time (a pipeline there must stay within one slot).
    pub(super) async fn cross_slot(
        &self,
        cmds: &[Cmd],
        chunk: usize,
    ) -> Result<Vec<Value>, ::redis::RedisError> {
        let c = self.get().await?;
        if !self.is_cluster() {
            let mut c = c;
            let mut out = Vec::with_capacity(cmds.len());
            for part in cmds.chunks(chunk.max(1)) {
                let mut p = ::redis::pipe();
                for cmd in part {
                    p.add_command(cmd.clone());
                }
                let replies: Vec<Value> = p.query_async(&mut c).await?;
                if replies.len() != part.len() {
                    return Err(::redis::RedisError::from((
                        ::redis::ErrorKind::UnexpectedReturnType,
                        "pipeline answered another number of replies",
                    )));
                }
                out.extend(replies);
            }
            return Ok(out);
        }
        futures::stream::iter(cmds.iter().cloned())
            .map(move |cmd| {
                let mut c = c.clone();
                async move { cmd.query_async::<Value>(&mut c).await }
            })
            .buffered(FAN_OUT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }
}

/// A server's connections, opened by each thread on first use and driven by that thread's
/// runtime (see the module documentation).
pub(super) struct PerThread {
    client: ::redis::Client,
    config: ConnectionManagerConfig,
    per_thread: usize,
    /// Names this set in every thread's cache, which holds it weakly: a cache entry whose store
    /// is gone is dropped (and its sockets closed) the next time that thread opens connections.
    owner: Arc<()>,
}

/// One thread's connections of one [`PerThread`].
struct Local {
    owner: Weak<()>,
    /// Gone when the runtime that drives these connections shut down (a test's runtime, a
    /// stopped arbiter) while the thread lives on: the connections are then dead and replaced.
    runtime: Weak<()>,
    conns: Vec<ConnectionManager>,
    next: usize,
}

thread_local! {
    static LOCAL: RefCell<Vec<Local>> = const { RefCell::new(Vec::new()) };
}

impl PerThread {
    fn get(&self) -> Result<ConnectionManager, ::redis::RedisError> {
        LOCAL.with(|cell| {
            let mut locals = cell.borrow_mut();
            let mine = locals.iter_mut().find(|l| {
                std::ptr::eq(l.owner.as_ptr(), Arc::as_ptr(&self.owner))
                    && l.runtime.strong_count() > 0
            });
            if let Some(l) = mine {
                l.next = l.next.wrapping_add(1);
                if let Some(c) = l.conns.get(l.next % l.conns.len().max(1)) {
                    return Ok(c.clone());
                }
            }
            locals.retain(|l| {
                l.owner.strong_count() > 0
                    && l.runtime.strong_count() > 0
                    && !std::ptr::eq(l.owner.as_ptr(), Arc::as_ptr(&self.owner))
            });
            let local = self.open_here()?;
            let first = local.conns.first().cloned();
            locals.push(local);
            first.ok_or_else(|| {
                ::redis::RedisError::from((::redis::ErrorKind::Io, "no redis connection"))
            })
        })
    }

    /// Opens this thread's connections (lazily: the first command connects).
    fn open_here(&self) -> Result<Local, ::redis::RedisError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(::redis::RedisError::from((
                ::redis::ErrorKind::Client,
                "the Redis store is used outside a tokio runtime",
            )));
        }
        // Dropped with the runtime's tasks when the runtime shuts down.
        let alive = Arc::new(());
        let runtime = Arc::downgrade(&alive);
        tokio::spawn(async move {
            let _alive = alive;
            std::future::pending::<()>().await
        });
        let conns = (0..self.per_thread)
            .map(|_| {
                ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Local {
            owner: Arc::downgrade(&self.owner),
            runtime,
            conns,
            next: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_list_their_seed_nodes() {
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379/"), None);
        assert_eq!(
            cluster_nodes("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/"),
            Some(Ok(vec![
                "redis://127.0.0.1:7000/".to_owned(),
                "redis://127.0.0.1:7001/".to_owned()
            ]))
        );
        assert_eq!(
            cluster_nodes("redis+cluster://:secret@a:1,b:2"),
            Some(Ok(vec![
                "redis://:secret@a:1/".to_owned(),
                "redis://:secret@b:2/".to_owned()
            ]))
        );
        assert!(matches!(cluster_nodes("redis+cluster:///"), Some(Err(_))));
    }

    fn single_server() -> Option<Connections> {
        let url = crate::testing::shared_redis().url.clone();
        if url.starts_with(CLUSTER_SCHEME) {
            return None;
        }
        Connections::open(&url, 1, 4, Duration::from_secs(5)).ok()
    }

    async fn client_id(conns: &Connections) -> i64 {
        let mut c = conns.get().await.expect("a connection");
        ::redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut c)
            .await
            .expect("CLIENT ID")
    }

    fn on_a_new_runtime<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    #[test]
    fn each_thread_drives_its_own_connection() {
        let Some(conns) = single_server() else { return };
        let conns = Arc::new(conns);
        let here = on_a_new_runtime(async {
            let first = client_id(&conns).await;
            assert_eq!(first, client_id(&conns).await, "one connection per thread");
            first
        });
        let c = conns.clone();
        let there = std::thread::spawn(move || on_a_new_runtime(client_id(&c)))
            .join()
            .expect("the other thread");
        assert_ne!(here, there, "another thread, another connection");
    }

    #[test]
    fn a_thread_outliving_its_runtime_reconnects_on_the_next() {
        let Some(conns) = single_server() else { return };
        let before = on_a_new_runtime(client_id(&conns));
        // The first runtime is gone, and with it the driver of that connection: a command on
        // the cached one would time out. The next runtime must get a working connection.
        let after = on_a_new_runtime(async {
            tokio::time::timeout(Duration::from_secs(2), client_id(&conns))
                .await
                .expect("answered on the second runtime")
        });
        assert_ne!(before, after);
    }
}
