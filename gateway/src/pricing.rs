//! Prices per message: the rate card (category × recipient country, in configuration, never in
//! code) and Meta's free cases. Pure functions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use whatsapp_cloud::wire::{PricingCategory, PricingType, TemplateCategory};

use crate::domain::{Money, E164};

/// Per-message prices for one market.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryRates {
    pub marketing: Money,
    pub utility: Money,
    pub authentication: Money,
}

/// Rates by recipient calling code (`"91"`, `"1"`, …) with a `"default"` market.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateCard {
    pub currency: String,
    pub rates: BTreeMap<String, CategoryRates>,
}

/// What a message is billed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Marketing,
    Utility,
    Authentication,
    /// Free-form reply inside the customer-service window.
    Service,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Marketing => "marketing",
            Category::Utility => "utility",
            Category::Authentication => "authentication",
            Category::Service => "service",
        }
    }

    pub fn of_template(c: TemplateCategory) -> Category {
        match c {
            TemplateCategory::Marketing | TemplateCategory::Other => Category::Marketing,
            TemplateCategory::Utility => Category::Utility,
            TemplateCategory::Authentication => Category::Authentication,
        }
    }
}

impl RateCard {
    pub fn validate(&self) -> Result<(), String> {
        if !self.rates.contains_key("default") {
            return Err("needs a \"default\" market".into());
        }
        for (market, r) in &self.rates {
            if market != "default"
                && !(market.len() <= 3 && market.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(format!(
                    "market {market:?} must be a calling code such as 91, or default"
                ));
            }
            if [r.marketing, r.utility, r.authentication]
                .iter()
                .any(|m| m.is_negative())
            {
                return Err(format!("market {market}: prices must not be negative"));
            }
        }
        Ok(())
    }

    /// The market of a recipient: the longest calling-code prefix on the card, else `default`.
    fn rates_for(&self, to: &E164) -> Option<&CategoryRates> {
        let digits = to.digits();
        (1..=3)
            .rev()
            .filter_map(|n| digits.get(..n))
            .find_map(|cc| self.rates.get(cc))
            .or_else(|| self.rates.get("default"))
    }

    fn rate(&self, category: Category, to: &E164) -> Money {
        match (category, self.rates_for(to)) {
            (Category::Service, _) | (_, None) => Money::ZERO,
            (Category::Marketing, Some(r)) => r.marketing,
            (Category::Utility, Some(r)) => r.utility,
            (Category::Authentication, Some(r)) => r.authentication,
        }
    }

    /// The price reserved at accept. Free: service messages, and utility templates inside an open
    /// customer-service window.
    pub fn quote(&self, category: Category, to: &E164, window_open: bool) -> Money {
        match category {
            Category::Service => Money::ZERO,
            Category::Utility if window_open => Money::ZERO,
            c => self.rate(c, to),
        }
    }

    /// The price settled from a status webhook's `pricing` object (`type` + `category`).
    pub fn settle(
        &self,
        kind: Option<PricingType>,
        category: Option<PricingCategory>,
        to: &E164,
    ) -> Money {
        match kind {
            Some(PricingType::FreeCustomerService | PricingType::FreeEntryPoint) => Money::ZERO,
            _ => {
                let c = match category {
                    Some(PricingCategory::Marketing | PricingCategory::MarketingLite) => {
                        Category::Marketing
                    }
                    Some(PricingCategory::Utility) => Category::Utility,
                    Some(
                        PricingCategory::Authentication
                        | PricingCategory::AuthenticationInternational,
                    ) => Category::Authentication,
                    Some(PricingCategory::Service | PricingCategory::ReferralConversion) => {
                        Category::Service
                    }
                    Some(PricingCategory::Unknown) | None => return Money::ZERO,
                };
                self.rate(c, to)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> RateCard {
        let r = |m, u, a| CategoryRates {
            marketing: Money(m),
            utility: Money(u),
            authentication: Money(a),
        };
        RateCard {
            currency: "INR".into(),
            rates: BTreeMap::from([
                ("91".into(), r(863_100, 115_000, 115_000)),
                ("default".into(), r(2_000_000, 500_000, 400_000)),
            ]),
        }
    }

    fn e164(s: &str) -> E164 {
        E164::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn quotes_by_category_market_and_window() {
        let c = card();
        let india = e164("+919876543210");
        let us = e164("+14155550100");
        assert_eq!(c.quote(Category::Marketing, &india, false), Money(863_100));
        assert_eq!(c.quote(Category::Utility, &india, false), Money(115_000));
        assert_eq!(c.quote(Category::Utility, &india, true), Money::ZERO);
        assert_eq!(c.quote(Category::Marketing, &india, true), Money(863_100));
        assert_eq!(c.quote(Category::Service, &india, true), Money::ZERO);
        assert_eq!(c.quote(Category::Utility, &us, false), Money(500_000));
    }

    #[test]
    fn settles_from_metas_pricing() {
        let c = card();
        let india = e164("+919876543210");
        assert_eq!(
            c.settle(
                Some(PricingType::Regular),
                Some(PricingCategory::Utility),
                &india
            ),
            Money(115_000)
        );
        assert_eq!(
            c.settle(
                Some(PricingType::FreeCustomerService),
                Some(PricingCategory::Utility),
                &india
            ),
            Money::ZERO
        );
        assert_eq!(
            c.settle(
                Some(PricingType::Regular),
                Some(PricingCategory::Marketing),
                &india
            ),
            Money(863_100)
        );
        assert_eq!(
            c.settle(None, Some(PricingCategory::Service), &india),
            Money::ZERO
        );
    }

    #[test]
    fn a_card_needs_a_default_market() {
        let mut c = card();
        c.rates.remove("default");
        assert!(c.validate().is_err());
    }
}
