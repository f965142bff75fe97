//! Several gateway nodes on one Redis (issue #11): node names and environment, the Redis
//! masters a run talks to (one server, or every master of a Redis Cluster), and waiting until
//! every business number has settled on one owner before the load starts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::e2e::{redis_connection, redis_info_field, Gateway};

/// The scheme the gateway reads as "Redis Cluster" (`redis+cluster://h1:p1,h2:p2/`).
const CLUSTER_SCHEME: &str = "redis+cluster://";

/// How long the lease holders must stay unchanged before the load starts. The gateway renews
/// and re-decides ownership every `lease_ms / 5` (1 s by default); a hand-off to a node that
/// joined takes one tick of the old owner (drain, release) and one of the new (take), so two
/// quiet ticks and a half mean the spread is final.
const SETTLED_FOR: Duration = Duration::from_millis(2_500);

/// The id of node `k` (0-based): `node-1`, `node-2`, …
pub fn node_id(k: usize) -> String {
    format!("node-{}", k + 1)
}

/// The gateway environment that puts a node in cluster mode under a stable name.
pub(crate) fn cluster_env(node: &str) -> [(String, String); 2] {
    [
        (
            "CLINIC_GATEWAY__CLUSTER__ENABLED".to_owned(),
            "true".to_owned(),
        ),
        (
            "CLINIC_GATEWAY__CLUSTER__NODE_ID".to_owned(),
            node.to_owned(),
        ),
    ]
}

/// The `redis://` URL of every master behind `url`: `url` itself for one server; for a
/// `redis+cluster://` URL the masters `CLUSTER NODES` lists on its first seed. Statistics
/// (`INFO`), `SCAN` and clean-up are per server, so a run must visit each master.
pub(crate) async fn redis_masters(url: &str) -> Result<Vec<String>> {
    let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
        return Ok(vec![url.to_owned()]);
    };
    let rest = rest.trim_end_matches('/');
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let seed = hosts
        .split(',')
        .map(str::trim)
        .find(|h| !h.is_empty())
        .with_context(|| format!("{url}: no cluster nodes listed"))?;
    let mut con = redis_connection(&format!("redis://{auth}{seed}/")).await?;
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut con)
        .await
        .with_context(|| format!("CLUSTER NODES on {seed}"))?;
    let masters: Vec<String> = cluster_masters(&text)
        .into_iter()
        .map(|h| format!("redis://{auth}{h}/"))
        .collect();
    if masters.is_empty() {
        bail!("{url}: CLUSTER NODES lists no healthy master");
    }
    Ok(masters)
}

/// `host:port` of each healthy master in a `CLUSTER NODES` reply (lines `id host:port@cport[,hostname]
/// flags master-id …`).
fn cluster_masters(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let addr = f.nth(1)?;
            let flags = f.next()?;
            let host = addr.split('@').next()?;
            let master = flags.split(',').any(|x| x == "master");
            let failing = flags.split(',').any(|x| x == "fail" || x == "noaddr");
            (master && !failing && !host.starts_with(':')).then(|| host.to_owned())
        })
        .collect()
}

/// One connection per master, with the server's process id when it reports one (for CPU).
pub(crate) struct Masters {
    pub cons: Vec<redis::aio::MultiplexedConnection>,
    pub pids: Vec<u32>,
}

impl Masters {
    pub(crate) async fn connect(url: &str) -> Result<Self> {
        let mut cons = Vec::new();
        let mut pids = Vec::new();
        for m in redis_masters(url).await? {
            let mut con = redis_connection(&m).await?;
            if let Some(pid) = redis_info_field(&mut con, "server", "process_id")
                .await
                .and_then(|p| u32::try_from(p).ok())
            {
                pids.push(pid);
            }
            cons.push(con);
        }
        Ok(Self { cons, pids })
    }

    /// A numeric `INFO` field summed over the masters; `None` if any did not answer.
    pub(crate) async fn info_sum(&mut self, section: &str, field: &str) -> Option<u64> {
        let mut sum = 0;
        for con in &mut self.cons {
            sum += redis_info_field(con, section, field).await?;
        }
        Some(sum)
    }

    /// GET of a single key, from whichever master holds it (the others answer MOVED).
    async fn get(&mut self, key: &str) -> Option<String> {
        for con in &mut self.cons {
            if let Ok(v) = redis::cmd("GET")
                .arg(key)
                .query_async::<Option<String>>(con)
                .await
            {
                return v;
            }
        }
        None
    }

    /// The node holding each number's lease (`<prefix>{n:<pnid>}:lease` = `<node>|<token>`).
    pub(crate) async fn lease_holders(
        &mut self,
        prefix: &str,
        numbers: &[String],
    ) -> Vec<Option<String>> {
        let mut out = Vec::with_capacity(numbers.len());
        for n in numbers {
            let v = self.get(&format!("{prefix}{{n:{n}}}:lease")).await;
            out.push(v.and_then(|v| v.rsplit_once('|').map(|(node, _)| node.to_owned())));
        }
        out
    }

    /// Members of the live-node set (`<prefix>nodes`, one key, so on one master).
    async fn live_nodes(&mut self, prefix: &str) -> usize {
        let key = format!("{prefix}nodes");
        for con in &mut self.cons {
            if let Ok(n) = redis::cmd("ZCARD")
                .arg(&key)
                .query_async::<usize>(con)
                .await
            {
                return n;
            }
        }
        0
    }
}

/// Numbers per owning node.
pub fn owner_counts(holders: &[Option<String>]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for h in holders.iter().flatten() {
        *out.entry(h.clone()).or_default() += 1;
    }
    out
}

/// Waits until all `nodes` are in the live set, every number's lease is held by one of them,
/// and the holders have not changed for [`SETTLED_FOR`]; returns the holders and how long it
/// took. Sending before that would measure the start-up hand-offs (every number first goes to
/// the node that started first) rather than steady state.
pub(crate) async fn wait_for_owners(
    masters: &mut Masters,
    prefix: &str,
    numbers: &[String],
    nodes: &[String],
    gws: &mut [Gateway],
    timeout: Duration,
) -> Result<(Vec<Option<String>>, f64)> {
    let start = Instant::now();
    let mut last: Option<(Vec<Option<String>>, Instant)> = None;
    loop {
        for (k, gw) in gws.iter_mut().enumerate() {
            if let Some(status) = gw.exited() {
                bail!(
                    "{} exited ({status}) before ownership settled; log {}:\n{}",
                    node_id(k),
                    gw.log.display(),
                    gw.log_tail(30)
                );
            }
        }
        let holders = masters.lease_holders(prefix, numbers).await;
        let complete = masters.live_nodes(prefix).await >= nodes.len()
            && holders
                .iter()
                .all(|h| h.as_ref().is_some_and(|h| nodes.contains(h)));
        if complete {
            match &last {
                Some((prev, since)) if *prev == holders => {
                    if since.elapsed() >= SETTLED_FOR {
                        return Ok((holders, start.elapsed().as_secs_f64()));
                    }
                }
                _ => last = Some((holders, Instant::now())),
            }
        } else {
            last = None;
        }
        if start.elapsed() > timeout {
            let now = masters.lease_holders(prefix, numbers).await;
            bail!(
                "ownership did not settle within {} s: holders {:?}",
                timeout.as_secs(),
                owner_counts(&now)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_start_at_one() {
        assert_eq!(node_id(0), "node-1");
        assert_eq!(node_id(2), "node-3");
        let env = cluster_env("node-2");
        assert_eq!(env[0].1, "true");
        assert_eq!(
            env[1],
            ("CLINIC_GATEWAY__CLUSTER__NODE_ID".into(), "node-2".into())
        );
    }

    #[test]
    fn masters_from_cluster_nodes() {
        let text = "\
07c3 127.0.0.1:30004@31004,host4 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@31003 myself,master - 0 0 3 connected 10923-16383
e7d1 127.0.0.1:30001@31001 master,fail - 0 1426238316232 1 connected
aaaa :0@0 master,noaddr - 0 0 0 disconnected
";
        assert_eq!(
            cluster_masters(text),
            vec!["127.0.0.1:30002".to_owned(), "127.0.0.1:30003".to_owned()]
        );
    }

    #[test]
    fn owners_are_counted_per_node() {
        let h = vec![
            Some("node-1".to_owned()),
            Some("node-2".to_owned()),
            None,
            Some("node-1".to_owned()),
        ];
        let c = owner_counts(&h);
        assert_eq!(c.get("node-1"), Some(&2));
        assert_eq!(c.get("node-2"), Some(&1));
        assert_eq!(c.len(), 2);
    }
}
