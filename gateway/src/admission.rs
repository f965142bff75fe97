//! Whether a clinic may send a message now, and at what price: the pure decision. The API edge
//! gathers the facts (template, window, wallet) and acts on the verdict.

use whatsapp_cloud::wire::{Content, TemplateStatus};

use crate::domain::{Money, E164};
use crate::pricing::{Category, RateCard};
use crate::store::tenancy::TemplateRecord;

/// Facts about one send, gathered from the store.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub content: &'a Content,
    pub to: &'a E164,
    /// The template the content names, if any and if known.
    pub template: Option<&'a TemplateRecord>,
    pub window_open: bool,
    pub rate_card: &'a RateCard,
}

/// Why a send is refused, with the problem slug the API reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    TemplateNotApproved {
        name: String,
        language: String,
        status: String,
    },
    TemplateRecategorised {
        name: String,
        language: String,
        category: String,
    },
    TemplateParameters {
        expected: usize,
        given: usize,
    },
    OutsideServiceWindow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub category: Category,
    pub price: Money,
    /// Counts against the portfolio's messaging limit (a template outside the window).
    pub counts_against_limit: bool,
}

/// Body parameters a template send fills.
fn body_parameters(content: &Content) -> usize {
    match content {
        Content::Template { template } => template
            .components
            .iter()
            .map(|c| match c {
                whatsapp_cloud::wire::Component::Body { parameters } => parameters.len(),
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

pub fn admit(f: &Facts<'_>) -> Result<Admission, Refusal> {
    match f.content {
        Content::Template { template } => {
            let Some(t) = f.template else {
                return Err(Refusal::TemplateNotApproved {
                    name: template.name.clone(),
                    language: template.language.code.clone(),
                    status: "NOT_FOUND".into(),
                });
            };
            if t.status != TemplateStatus::Approved {
                let status = serde_json::to_value(t.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "UNKNOWN".into());
                return Err(Refusal::TemplateNotApproved {
                    name: t.name.clone(),
                    language: t.language.clone(),
                    status,
                });
            }
            if let Some(pending) = t.pending_category {
                let category = serde_json::to_value(pending)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                return Err(Refusal::TemplateRecategorised {
                    name: t.name.clone(),
                    language: t.language.clone(),
                    category,
                });
            }
            let given = body_parameters(f.content);
            if given != t.body_parameters {
                return Err(Refusal::TemplateParameters {
                    expected: t.body_parameters,
                    given,
                });
            }
            let category = Category::of_template(t.category);
            Ok(Admission {
                category,
                price: f.rate_card.quote(category, f.to, f.window_open),
                counts_against_limit: !f.window_open,
            })
        }
        _ if !f.window_open => Err(Refusal::OutsideServiceWindow),
        _ => Ok(Admission {
            category: Category::Service,
            price: Money::ZERO,
            counts_against_limit: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use whatsapp_cloud::wire::{Language, Template, TemplateCategory, Text};

    use super::*;
    use crate::pricing::CategoryRates;

    fn card() -> RateCard {
        RateCard {
            currency: "INR".into(),
            rates: BTreeMap::from([(
                "default".into(),
                CategoryRates {
                    marketing: Money(800_000),
                    utility: Money(100_000),
                    authentication: Money(100_000),
                },
            )]),
        }
    }

    fn record(status: TemplateStatus, category: TemplateCategory) -> TemplateRecord {
        TemplateRecord {
            name: "reminder".into(),
            language: "en".into(),
            category,
            status,
            meta_id: String::new(),
            body_parameters: 0,
            pending_category: None,
            reason: None,
            updated_ms: 0,
        }
    }

    fn template() -> Content {
        Content::Template {
            template: Template {
                name: "reminder".into(),
                language: Language {
                    code: "en".into(),
                    policy: None,
                },
                components: vec![],
            },
        }
    }

    #[test]
    fn templates_must_be_approved_and_cost_by_category_and_window() {
        let to = E164::parse("+919876543210").unwrap_or_else(|e| panic!("{e}"));
        let card = card();
        let content = template();
        let approved = record(TemplateStatus::Approved, TemplateCategory::Utility);
        fn facts<'a>(
            content: &'a Content,
            to: &'a E164,
            t: Option<&'a TemplateRecord>,
            window_open: bool,
            card: &'a RateCard,
        ) -> Facts<'a> {
            Facts {
                content,
                to,
                template: t,
                window_open,
                rate_card: card,
            }
        }
        assert_eq!(
            admit(&facts(&content, &to, Some(&approved), false, &card)).map(|a| a.price),
            Ok(Money(100_000))
        );
        assert_eq!(
            admit(&facts(&content, &to, Some(&approved), true, &card)).map(|a| a.price),
            Ok(Money::ZERO)
        );
        assert!(admit(&facts(&content, &to, Some(&approved), false, &card))
            .is_ok_and(|a| a.counts_against_limit));
        let paused = record(TemplateStatus::Paused, TemplateCategory::Utility);
        assert!(
            matches!(admit(&facts(&content, &to, Some(&paused), false, &card)), Err(Refusal::TemplateNotApproved { status, .. }) if status == "PAUSED")
        );
        assert!(matches!(
            admit(&facts(&content, &to, None, false, &card)),
            Err(Refusal::TemplateNotApproved { .. })
        ));
        let mut held = approved.clone();
        held.pending_category = Some(TemplateCategory::Marketing);
        assert!(matches!(
            admit(&facts(&content, &to, Some(&held), false, &card)),
            Err(Refusal::TemplateRecategorised { .. })
        ));
        let mut two = approved;
        two.body_parameters = 2;
        assert_eq!(
            admit(&facts(&content, &to, Some(&two), false, &card)),
            Err(Refusal::TemplateParameters {
                expected: 2,
                given: 0
            })
        );
    }

    #[test]
    fn free_form_needs_the_window_and_is_free() {
        let to = E164::parse("+919876543210").unwrap_or_else(|e| panic!("{e}"));
        let card = card();
        let text = Content::Text {
            text: Text {
                body: "hi".into(),
                preview_url: false,
            },
        };
        let facts = |window_open| Facts {
            content: &text,
            to: &to,
            template: None,
            window_open,
            rate_card: &card,
        };
        assert_eq!(admit(&facts(false)), Err(Refusal::OutsideServiceWindow));
        assert_eq!(
            admit(&facts(true)).map(|a| (a.category, a.price)),
            Ok((Category::Service, Money::ZERO))
        );
    }
}
