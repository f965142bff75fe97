//! The shared API rate limit on Redis: one GCRA script per request, in the clinic's slot.

use std::time::Duration;

use async_trait::async_trait;

use super::{unavailable, RedisStore};
use crate::domain::TenantId;
use crate::store::rate::RateStore;
use crate::store::StoreError;

#[async_trait]
impl RateStore for RedisStore {
    async fn take_api_request(
        &self,
        tenant: &TenantId,
        rate: u32,
        burst: u32,
    ) -> Result<Result<(), Duration>, StoreError> {
        let mut c = self.conn().await?;
        let wait_us: i64 = self
            .inner
            .scripts
            .api_rate
            .key(self.keys().api_rate(tenant))
            .arg(rate)
            .arg(burst)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(if wait_us <= 0 {
            Ok(())
        } else {
            Err(Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)))
        })
    }
}
