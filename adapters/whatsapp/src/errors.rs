//! Meta error code → what the sender should do. Decide by `error.code`, never by HTTP status.

use std::time::Duration;

/// How a failed send should be handled. Backoff policy (attempt counting, jitter, caps) belongs
/// to the caller; the class only says which kind of wait applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient on Meta's side: retry the same request after at least `after`, with backoff.
    Retry { after: Duration },
    /// The business number is over its throughput: slow the whole number down, then retry.
    ThrottleNumber { after: Duration },
    /// The pair rate to this recipient is exceeded: retry only that recipient after 4^n seconds.
    ThrottleRecipient,
    /// Per-user marketing limit: do not retry within `after` (24 h).
    RetryLater { after: Duration },
    /// Outside the 24 h customer-service window: only a template can reach this patient now.
    ResendAsTemplate,
    /// The template is missing, paused, disabled or has the wrong parameters: fix the template.
    TemplateProblem,
    /// The access token expired or was revoked: alert the operator; nothing sends until fixed.
    AuthExpired,
    /// The account is restricted by Meta: alert the operator.
    AccountRestricted,
    /// Retrying the same request cannot succeed.
    Permanent,
}

impl ErrorClass {
    /// True when sending the same request again later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::Retry { .. }
                | ErrorClass::ThrottleNumber { .. }
                | ErrorClass::ThrottleRecipient
                | ErrorClass::RetryLater { .. }
        )
    }
}

const SECOND: Duration = Duration::from_secs(1);

/// Classifies every code of the reference table. Unknown codes are `Permanent`: a send Meta
/// refused for a reason we do not understand is surfaced to the clinic rather than retried blindly.
pub fn classify(code: i64) -> ErrorClass {
    match code {
        // API unknown / service / too many calls: transient.
        1 | 2 | 131000 | 131016 | 133004 => ErrorClass::Retry { after: SECOND },
        // Application-level and WABA management rate limits.
        4 | 80007 => ErrorClass::ThrottleNumber {
            after: Duration::from_secs(60),
        },
        // Throughput exceeded; 131057 is the ~1 min upgrade window.
        130429 => ErrorClass::ThrottleNumber { after: SECOND },
        131057 => ErrorClass::ThrottleNumber {
            after: Duration::from_secs(10),
        },
        131056 => ErrorClass::ThrottleRecipient,
        131049 => ErrorClass::RetryLater {
            after: Duration::from_secs(24 * 3600),
        },
        131047 => ErrorClass::ResendAsTemplate,
        132000 | 132001 | 132005 | 132007 | 132012 | 132015 | 132016 => ErrorClass::TemplateProblem,
        190 => ErrorClass::AuthExpired,
        368 => ErrorClass::AccountRestricted,
        100 | 131008 | 131009 | 131021 | 131026 | 131050 | 131051 | 131053 => ErrorClass::Permanent,
        _ => ErrorClass::Permanent,
    }
}

/// Meta's short title for the codes the sandbox produces and the gateway reports.
pub fn title(code: i64) -> &'static str {
    match code {
        1 => "API Unknown",
        2 => "API Service",
        4 => "API Too Many Calls",
        100 => "Invalid parameter",
        190 => "Access token has expired",
        368 => "Temporarily blocked for policies violations",
        80007 => "Rate limit issues",
        130429 => "Rate limit hit",
        131000 => "Something went wrong",
        131008 => "Required parameter is missing",
        131009 => "Parameter value is not valid",
        131016 => "Service unavailable",
        131021 => "Recipient cannot be sender",
        131026 => "Message undeliverable",
        131047 => "Re-engagement message",
        131049 => "This message was not delivered to maintain healthy ecosystem engagement",
        131050 => "User has stopped marketing messages",
        131051 => "Unsupported message type",
        131053 => "Media upload error",
        131056 => "(Business Account, Consumer Account) pair rate limit hit",
        131057 => "Account in maintenance mode",
        132000 => "Number of parameters does not match the expected number of params",
        132001 => "Template does not exist",
        132005 => "Translated text too long",
        132007 => "Template Format Character Policy Violated",
        132012 => "Parameter format does not match format in the created template",
        132015 => "Template is Paused",
        132016 => "Template is Disabled",
        133004 => "Server temporarily unavailable",
        _ => "Unknown error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_code_has_its_class() {
        for code in [1, 2, 131000, 131016, 133004] {
            assert!(matches!(classify(code), ErrorClass::Retry { .. }), "{code}");
        }
        for code in [4, 80007, 130429, 131057] {
            assert!(
                matches!(classify(code), ErrorClass::ThrottleNumber { .. }),
                "{code}"
            );
        }
        assert_eq!(classify(131056), ErrorClass::ThrottleRecipient);
        assert_eq!(
            classify(131049),
            ErrorClass::RetryLater {
                after: Duration::from_secs(86_400)
            }
        );
        assert_eq!(classify(131047), ErrorClass::ResendAsTemplate);
        for code in [132000, 132001, 132005, 132007, 132012, 132015, 132016] {
            assert_eq!(classify(code), ErrorClass::TemplateProblem, "{code}");
        }
        assert_eq!(classify(190), ErrorClass::AuthExpired);
        assert_eq!(classify(368), ErrorClass::AccountRestricted);
        for code in [100, 131008, 131009, 131021, 131026, 131050, 131051, 131053] {
            assert_eq!(classify(code), ErrorClass::Permanent, "{code}");
            assert!(!classify(code).is_retryable());
        }
    }

    #[test]
    fn unknown_codes_are_not_retried_blindly() {
        assert_eq!(classify(999_999), ErrorClass::Permanent);
        assert_eq!(title(999_999), "Unknown error");
    }

    #[test]
    fn retryable_classes_say_so() {
        assert!(classify(130429).is_retryable());
        assert!(classify(131056).is_retryable());
        assert!(classify(131049).is_retryable());
        assert!(!classify(131047).is_retryable());
        assert!(!classify(190).is_retryable());
    }
}
