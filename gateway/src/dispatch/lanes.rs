//! Which lane to read first: strict priority, with a guaranteed share for lower lanes.

use crate::domain::Lane;

/// Care before reminders before bulk, except every `low_every`-th round, which starts from bulk,
/// so a steady stream of care messages can never starve reminders or broadcasts.
pub fn lane_order(round: u32, low_every: u32) -> [Lane; 3] {
    if low_every > 0 && round % low_every == 0 {
        [Lane::Bulk, Lane::Reminders, Lane::Care]
    } else {
        [Lane::Care, Lane::Reminders, Lane::Bulk]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_with_a_share_for_lower_lanes() {
        let rounds: Vec<Lane> = (1..=16).map(|r| lane_order(r, 8)[0]).collect();
        assert_eq!(rounds.iter().filter(|l| **l == Lane::Care).count(), 14);
        assert_eq!(rounds.iter().filter(|l| **l == Lane::Bulk).count(), 2);
        assert_eq!(lane_order(3, 0), [Lane::Care, Lane::Reminders, Lane::Bulk]);
    }
}
