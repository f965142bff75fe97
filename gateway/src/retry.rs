//! Retry policy: what to do after a failed send attempt. Pure, so it is tested without I/O.

use std::time::Duration;

use whatsapp_cloud::{classify, ErrorClass};

/// How a send attempt failed, as far as the dispatcher can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendFailure {
    /// Meta answered with an error code.
    Meta { code: i64 },
    /// Meta answered 5xx (or another status) without its error envelope: not sent.
    Http { status: u16 },
    /// Nothing reached Meta.
    Connect,
    /// No answer in time, or the connection broke after the request went out: Meta may have it.
    Ambiguous,
}

/// Meta's "throughput exceeded" for a business number.
pub const THROUGHPUT_EXCEEDED: i64 = 130429;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
    pub max_attempts: u32,
    pub status_grace: Duration,
    /// The number's stop after 130429 (see `dispatch.throughput_pause_ms`).
    pub throughput_pause: Duration,
}

/// The dispatcher's next step after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after `delay`. `pause_number` asks the whole number to slow down first.
    Retry {
        delay: Duration,
        pause_number: Option<Duration>,
    },
    /// Do not send again until Meta's status webhook had `delay` to arrive.
    AwaitStatus { delay: Duration },
    /// Give up; the message fails with the error.
    Fail,
}

impl RetryPolicy {
    /// Capped exponential backoff with "equal jitter": half fixed, half random (`jitter` in 0..1).
    pub fn backoff(&self, attempt: u32, floor: Duration, jitter: f64) -> Duration {
        let exp = self.base.saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1).min(20))
                .unwrap_or(u32::MAX),
        );
        let capped = exp.min(self.max).max(floor.min(self.max));
        let half = capped / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// Decides the next step after attempt number `attempt` (1-based) failed.
    pub fn after_failure(&self, failure: &SendFailure, attempt: u32, jitter: f64) -> Next {
        let exhausted = attempt >= self.max_attempts;
        let retry = |floor: Duration, pause: Option<Duration>| {
            if exhausted {
                Next::Fail
            } else {
                Next::Retry {
                    delay: self.backoff(attempt, floor, jitter),
                    pause_number: pause,
                }
            }
        };
        match failure {
            SendFailure::Meta { code } => match classify(*code) {
                ErrorClass::Retry { after } => retry(after, None),
                // 130429 clears as soon as the rolling second is under the tier again.
                ErrorClass::ThrottleNumber { .. } if *code == THROUGHPUT_EXCEEDED => {
                    retry(self.throughput_pause, Some(self.throughput_pause))
                }
                ErrorClass::ThrottleNumber { after } => retry(after, Some(after)),
                // Meta's documented pair-rate backoff: 4^n seconds (1, 4, 16, 64 …).
                ErrorClass::ThrottleRecipient => {
                    if exhausted {
                        Next::Fail
                    } else {
                        let secs = 4u64.saturating_pow(attempt.saturating_sub(1).min(10));
                        Next::Retry {
                            delay: Duration::from_secs(secs)
                                .min(self.max.max(Duration::from_secs(1))),
                            pause_number: None,
                        }
                    }
                }
                // Not within 24 h; the deadline decides whether it is ever sent.
                ErrorClass::RetryLater { after } => {
                    if exhausted {
                        Next::Fail
                    } else {
                        Next::Retry {
                            delay: after,
                            pause_number: None,
                        }
                    }
                }
                ErrorClass::ResendAsTemplate
                | ErrorClass::TemplateProblem
                | ErrorClass::AuthExpired
                | ErrorClass::AccountRestricted
                | ErrorClass::Permanent => Next::Fail,
            },
            // 408: the server timed the request out before processing it (seen from the
            // sandbox under load), so sending it again cannot duplicate it.
            SendFailure::Http { status } if *status >= 500 || *status == 429 || *status == 408 => {
                retry(Duration::ZERO, None)
            }
            SendFailure::Http { .. } => Next::Fail,
            SendFailure::Connect => retry(Duration::ZERO, None),
            SendFailure::Ambiguous => {
                if exhausted {
                    Next::Fail
                } else {
                    Next::AwaitStatus {
                        delay: self.status_grace,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            max_attempts: 5,
            status_grace: Duration::from_secs(30),
            throughput_pause: Duration::from_millis(250),
        }
    }

    /// 130429 stops the number briefly (Meta refuses only until the rolling second is under
    /// the tier); the ~1 min tier upgrade (131057) keeps Meta's 10 s.
    #[test]
    fn throughput_exceeded_pauses_the_number_briefly() {
        let p = policy();
        let pause = |code| match p.after_failure(&SendFailure::Meta { code }, 1, 0.5) {
            Next::Retry { pause_number, .. } => pause_number,
            _ => None,
        };
        assert_eq!(pause(130429), Some(Duration::from_millis(250)));
        assert_eq!(pause(131057), Some(Duration::from_secs(10)));
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = policy();
        assert_eq!(p.backoff(1, Duration::ZERO, 1.0), Duration::from_secs(1));
        assert_eq!(p.backoff(3, Duration::ZERO, 1.0), Duration::from_secs(4));
        assert_eq!(p.backoff(3, Duration::ZERO, 0.0), Duration::from_secs(2));
        assert_eq!(p.backoff(30, Duration::ZERO, 1.0), Duration::from_secs(60));
        assert_eq!(
            p.backoff(1, Duration::from_secs(10), 1.0),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn classes_map_to_steps() {
        let p = policy();
        assert!(matches!(
            p.after_failure(&SendFailure::Meta { code: 130429 }, 1, 0.5),
            Next::Retry {
                pause_number: Some(_),
                ..
            }
        ));
        assert_eq!(
            p.after_failure(&SendFailure::Meta { code: 131056 }, 3, 0.5),
            Next::Retry {
                delay: Duration::from_secs(16),
                pause_number: None
            }
        );
        assert_eq!(
            p.after_failure(&SendFailure::Meta { code: 131026 }, 1, 0.5),
            Next::Fail
        );
        assert_eq!(
            p.after_failure(&SendFailure::Meta { code: 132001 }, 1, 0.5),
            Next::Fail
        );
        assert_eq!(
            p.after_failure(&SendFailure::Meta { code: 131047 }, 1, 0.5),
            Next::Fail
        );
        assert!(matches!(
            p.after_failure(&SendFailure::Http { status: 503 }, 1, 0.5),
            Next::Retry {
                pause_number: None,
                ..
            }
        ));
        assert!(matches!(
            p.after_failure(&SendFailure::Http { status: 408 }, 1, 0.5),
            Next::Retry {
                pause_number: None,
                ..
            }
        ));
        assert_eq!(
            p.after_failure(&SendFailure::Http { status: 404 }, 1, 0.5),
            Next::Fail
        );
        assert_eq!(
            p.after_failure(&SendFailure::Ambiguous, 1, 0.5),
            Next::AwaitStatus {
                delay: Duration::from_secs(30)
            }
        );
    }

    #[test]
    fn attempts_are_bounded() {
        let p = policy();
        for f in [
            SendFailure::Meta { code: 131000 },
            SendFailure::Meta { code: 130429 },
            SendFailure::Meta { code: 131056 },
            SendFailure::Http { status: 500 },
            SendFailure::Connect,
            SendFailure::Ambiguous,
        ] {
            assert_eq!(p.after_failure(&f, 5, 0.5), Next::Fail, "{f:?}");
        }
    }
}
