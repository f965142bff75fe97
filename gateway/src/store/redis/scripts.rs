//! The Lua scripts, loaded once per store and run with EVALSHA (falling back to EVAL on NOSCRIPT).

use ::redis::Script;

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
