//! The per-message pricing Meta reports on `sent` and `delivered` (PMP, since July 2025).

use crate::wire::{
    Conversation, ConversationOrigin, Pricing, PricingCategory, PricingType, TemplateCategory,
};

/// Pricing of one accepted send: free service inside the window, free utility templates inside
/// the window, every other template billed at its category.
pub fn price(template_category: Option<TemplateCategory>, window_open: bool) -> Pricing {
    let (kind, category, billable) = match template_category {
        None => (
            PricingType::FreeCustomerService,
            PricingCategory::Service,
            false,
        ),
        Some(TemplateCategory::Utility) if window_open => (
            PricingType::FreeCustomerService,
            PricingCategory::Utility,
            false,
        ),
        Some(c) => (PricingType::Regular, category_of(c), true),
    };
    Pricing {
        billable: Some(billable),
        pricing_model: Some("PMP".into()),
        kind: Some(kind),
        category: Some(category),
    }
}

fn category_of(c: TemplateCategory) -> PricingCategory {
    match c {
        TemplateCategory::Marketing => PricingCategory::Marketing,
        TemplateCategory::Utility => PricingCategory::Utility,
        TemplateCategory::Authentication => PricingCategory::Authentication,
        TemplateCategory::Other => PricingCategory::Unknown,
    }
}

/// The legacy `conversation` object Meta still sends beside `pricing`.
pub fn conversation(id: String, pricing: &Pricing, expires_unix: u64) -> Conversation {
    let origin = match pricing.category {
        Some(PricingCategory::Marketing) => "marketing",
        Some(PricingCategory::Utility) => "utility",
        Some(PricingCategory::Authentication) => "authentication",
        _ => "service",
    };
    Conversation {
        id,
        expiration_timestamp: Some(expires_unix.to_string()),
        origin: Some(ConversationOrigin {
            kind: origin.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let p = price(None, true);
        assert_eq!(p.kind, Some(PricingType::FreeCustomerService));
        assert_eq!(p.category, Some(PricingCategory::Service));
        assert_eq!(p.billable, Some(false));
        let p = price(Some(TemplateCategory::Utility), true);
        assert_eq!(
            (p.kind, p.category),
            (
                Some(PricingType::FreeCustomerService),
                Some(PricingCategory::Utility)
            )
        );
        let p = price(Some(TemplateCategory::Utility), false);
        assert_eq!(
            (p.kind, p.billable),
            (Some(PricingType::Regular), Some(true))
        );
        let p = price(Some(TemplateCategory::Marketing), true);
        assert_eq!(
            (p.kind, p.category),
            (Some(PricingType::Regular), Some(PricingCategory::Marketing))
        );
    }
}
