//! Money in integer micro-units of the wallet currency (₹1 = 1,000,000). Never floats.

use std::fmt;
use std::ops::{Add, Neg, Sub};

use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(pub i64);

impl Money {
    pub const ZERO: Money = Money(0);
    pub const MICROS_PER_UNIT: i64 = 1_000_000;

    pub fn micros(self) -> i64 {
        self.0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, o: Money) -> Money {
        Money(self.0.saturating_add(o.0))
    }
}

impl Sub for Money {
    type Output = Money;
    fn sub(self, o: Money) -> Money {
        Money(self.0.saturating_sub(o.0))
    }
}

impl Neg for Money {
    type Output = Money;
    fn neg(self) -> Money {
        Money(self.0.saturating_neg())
    }
}

impl fmt::Display for Money {
    /// `12.345600` units: exact, for logs and messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let unit = Money::MICROS_PER_UNIT as u64;
        write!(f, "{sign}{}.{:06}", abs / unit, abs % unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_exactly() {
        assert_eq!(Money(115_000).to_string(), "0.115000");
        assert_eq!(Money(-1_500_000).to_string(), "-1.500000");
        assert_eq!(Money(i64::MAX) + Money(1), Money(i64::MAX));
    }
}
