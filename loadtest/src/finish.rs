//! How every scenario run ends: the run's Redis keys go unless kept; its files go when it passed
//! and stay, with the gateway log's tail printed, when it did not; and the footer every report's
//! text ends with.

use std::path::Path;

use anyhow::Result;

use crate::e2e::Gateway;

/// SCAN + UNLINK of every key under the run's prefix.
pub(crate) async fn delete_prefix(
    con: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> Result<u64> {
    let pattern = format!("{prefix}*");
    let mut cursor: u64 = 0;
    let mut deleted = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await?;
        if !keys.is_empty() {
            // One UNLINK per key, pipelined: a Redis Cluster master refuses a multi-key UNLINK
            // whose keys are in different slots, and a run's keys span many.
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("UNLINK").arg(k);
            }
            let n: Vec<u64> = pipe.query_async(con).await?;
            deleted += n.iter().sum::<u64>();
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// Deletes the run's keys unless `keep`; how many went, `None` when kept or when the delete
/// failed (said on stderr: a failed clean-up must not fail the run it measured).
pub(crate) async fn delete_run_keys(
    con: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    keep: bool,
) -> Option<u64> {
    if keep {
        return None;
    }
    match delete_prefix(con, prefix).await {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!("loadgen: could not delete keys under {prefix}: {e}");
            None
        }
    }
}

/// Removes the run's directory (gateway config and log) when the run passed, unless
/// `keep_files`; when it failed, keeps it and prints the log's last lines, which usually say
/// why. Returns the log's path for the report.
pub(crate) fn tidy_run_dir(
    gw: &Gateway,
    dir: &Path,
    problems: &[String],
    keep_files: bool,
) -> String {
    if !problems.is_empty() {
        eprintln!(
            "loadgen: last gateway log lines ({}):\n{}",
            gw.log.display(),
            gw.log_tail(20)
        );
    }
    let gateway_log = gw.log.display().to_string();
    if problems.is_empty() && !keep_files {
        let _ = std::fs::remove_dir_all(dir);
    }
    gateway_log
}

/// The end of every scenario's report: what happened to the Redis keys, where the log is, and
/// the verdict.
pub(crate) fn write_footer(
    f: &mut std::fmt::Formatter<'_>,
    keys_deleted: Option<u64>,
    gateway_log: &str,
    problems: &[String],
) -> std::fmt::Result {
    match keys_deleted {
        Some(n) => writeln!(f, "  redis keys deleted: {n}")?,
        None => writeln!(f, "  redis keys kept")?,
    }
    writeln!(f, "  gateway log: {gateway_log}")?;
    if problems.is_empty() {
        write!(f, "  PASS")
    } else {
        write!(f, "  FAIL: {}", problems.join("; "))
    }
}
