//! The Lua scripts, loaded once per store and run with EVALSHA (falling back to EVAL on NOSCRIPT).

use ::redis::{ErrorKind, Script, ScriptInvocation, ServerErrorKind, Value};

use crate::store::StoreError;

pub(super) struct Scripts {
    pub(super) accept: Script,
    pub(super) commit: Script,
    pub(super) ack: Script,
    pub(super) defer: Script,
    pub(super) promote: Script,
    pub(super) depth: Script,
    // Tenancy (see `tenancy.rs`).
    pub(super) claim: Script,
    pub(super) del_if: Script,
    pub(super) credit: Script,
    pub(super) reserve: Script,
    pub(super) wallet_end: Script,
    pub(super) window: Script,
    pub(super) limit: Script,
    // Ownership (see `leases.rs`).
    pub(super) lease: Script,
    pub(super) api_rate: Script,
    pub(super) inbox_push: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            accept: Script::new(include_str!("lua/accept.lua")),
            commit: Script::new(include_str!("lua/commit.lua")),
            ack: Script::new(include_str!("lua/ack.lua")),
            defer: Script::new(include_str!("lua/defer.lua")),
            promote: Script::new(include_str!("lua/promote.lua")),
            depth: Script::new(include_str!("lua/depth.lua")),
            claim: Script::new(include_str!("lua/claim.lua")),
            del_if: Script::new(include_str!("lua/del_if.lua")),
            credit: Script::new(include_str!("lua/credit.lua")),
            reserve: Script::new(include_str!("lua/reserve.lua")),
            wallet_end: Script::new(include_str!("lua/wallet_end.lua")),
            window: Script::new(include_str!("lua/window.lua")),
            limit: Script::new(include_str!("lua/limit.lua")),
            lease: Script::new(include_str!("lua/lease.lua")),
            api_rate: Script::new(include_str!("lua/api_rate.lua")),
            inbox_push: Script::new(include_str!("lua/inbox_push.lua")),
        }
    }
}

impl super::RedisStore {
    /// Runs several calls of one script in one pipeline (one round trip). Their keys must share
    /// one hash tag, so the pipeline goes to one Cluster slot; Redis runs them in order.
    ///
    /// When Redis does not have the script (restarted, `SCRIPT FLUSH`), loads it and runs the
    /// pipeline again. Calls that already ran then run twice, which the batched scripts allow:
    /// each is idempotent per item (accept by message id, reserve by message id, limit by
    /// patient).
    pub(super) async fn run_scripts(
        &self,
        script: &Script,
        calls: &[ScriptInvocation<'_>],
    ) -> Result<Vec<Value>, StoreError> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for call in calls {
            pipe.invoke_script(call);
        }
        let mut c = self.conn().await?;
        let replies = match pipe.query_async::<Vec<Value>>(&mut c).await {
            Ok(v) => v,
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                script
                    .prepare_invoke()
                    .load_async(&mut c)
                    .await
                    .map_err(super::unavailable)?;
                pipe.query_async(&mut c).await.map_err(super::unavailable)?
            }
            Err(e) => return Err(super::unavailable(e)),
        };
        if replies.len() != calls.len() {
            return Err(StoreError::Unavailable(format!(
                "pipeline: {} replies to {} scripts",
                replies.len(),
                calls.len()
            )));
        }
        Ok(replies)
    }
}
