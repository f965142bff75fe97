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

use std::sync::atomic::{AtomicUsize, Ordering};
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
    Single {
        conns: Box<[ConnectionManager]>,
        next: AtomicUsize,
    },
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
    Connections::open(url, 1, 1, Duration::from_secs(5))?
        .get()
        .await
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
        let conns: Vec<ConnectionManager> = (0..pool_size.clamp(1, max))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<_, _>>()?;
        Ok(Connections::Single {
            conns: conns.into(),
            next: AtomicUsize::new(0),
        })
    }

    /// A connection, round robin over the pool (or the cluster's).
    pub(super) async fn get(&self) -> Result<Conn, ::redis::RedisError> {
        match self {
            Connections::Single { conns, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed) % conns.len().max(1);
                conns.get(i).cloned().map(Conn::Single).ok_or_else(|| {
                    ::redis::RedisError::from((::redis::ErrorKind::Io, "no redis connection"))
                })
            }
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
}
