//! The Lua scripts, loaded once per store and run with EVALSHA (falling back to EVAL on NOSCRIPT).

use ::redis::Script;

pub(super) struct Scripts {
    pub(super) accept: Script,
    pub(super) commit: Script,
    pub(super) ack: Script,
    pub(super) defer: Script,
    pub(super) promote: Script,
    pub(super) depth: Script,
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
        }
    }
}
