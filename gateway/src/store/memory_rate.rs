//! The shared API rate limit in memory (one process: the same rule as Redis, for the contract).

use std::time::Duration;

use async_trait::async_trait;

use super::memory::MemoryStore;
use super::rate::{gcra, RateStore};
use super::StoreError;
use crate::domain::TenantId;

#[async_trait]
impl RateStore for MemoryStore {
    async fn take_api_request(
        &self,
        tenant: &TenantId,
        rate: u32,
        burst: u32,
    ) -> Result<Result<(), Duration>, StoreError> {
        let now_us = crate::clock::now_ms() * 1_000;
        let mut g = self.rates.lock();
        let tat = g.get(tenant).copied();
        Ok(match gcra(tat, now_us, rate, burst) {
            Ok(next) => {
                g.insert(tenant.clone(), next);
                Ok(())
            }
            Err(wait) => Err(wait),
        })
    }
}
