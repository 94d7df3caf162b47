//! When to try a request again: exponential backoff with jitter (the `backon` crate), or the
//! wait the server asks for (`Retry-After`, `retry-after-ms`), within a budget of waiting long
//! enough to ride out an embedding server's restart (24–30 s measured for infinity).

use super::EmbedderSettings;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

/// Backoff before the first retry; it doubles with each further one.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(500);
/// Longest backoff between two attempts before jitter; jitter adds up to as much again.
pub const DEFAULT_RETRY_MAX_DELAY: Duration = Duration::from_secs(15);
/// Time a request may spend waiting between attempts before giving up: two minutes, four
/// times an infinity restart, so that a restarted server does not fail a long restore.
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(120);
/// Longest wait a server's `Retry-After` can impose at once.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How a request is retried; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RetryPolicy {
    /// The first backoff (jitter makes it up to twice that).
    pub base: Duration,
    /// The longest backoff, before jitter.
    pub max_delay: Duration,
    /// The total wait between attempts after which a request gives up.
    pub window: Duration,
    /// Attempts in all, the first included; `None`: as many as the window allows.
    pub max_attempts: Option<u32>,
}

impl RetryPolicy {
    /// The policy `settings` ask for, defaults filling the gaps.
    pub fn from_settings(settings: &EmbedderSettings) -> Self {
        RetryPolicy {
            base: settings.openai_retry_base.unwrap_or(DEFAULT_RETRY_BASE),
            max_delay: settings
                .openai_retry_max_delay
                .unwrap_or(DEFAULT_RETRY_MAX_DELAY),
            window: settings.openai_retry_window.unwrap_or(DEFAULT_RETRY_WINDOW),
            max_attempts: settings.openai_max_attempts.map(|n| n.max(1)),
        }
    }

    /// The waits of one request, starting after its first attempt.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            backoff: ExponentialBuilder::new()
                .with_min_delay(self.base)
                .with_max_delay(self.max_delay.max(self.base))
                .with_factor(2.0)
                .with_jitter()
                .without_max_times()
                .build(),
            policy: *self,
            attempts: 1,
            waited: Duration::ZERO,
        }
    }
}

/// The waits left to one request.
pub(super) struct Schedule {
    backoff: ExponentialBackoff,
    policy: RetryPolicy,
    /// Attempts made so far.
    attempts: u32,
    /// Time waited between them so far.
    waited: Duration,
}

impl Schedule {
    /// The wait before the next attempt after a failed one, or `None` when the budget is spent.
    /// The server's wait (capped at a minute) replaces the backoff; the last wait is cut to what
    /// is left of the window, so that the whole window is used.
    pub fn next_wait(&mut self, server_wait: Option<Duration>) -> Option<Duration> {
        if self
            .policy
            .max_attempts
            .is_some_and(|max| self.attempts >= max)
        {
            return None;
        }
        let left = self.policy.window.checked_sub(self.waited)?;
        if left.is_zero() {
            return None;
        }
        let own = self.backoff.next()?;
        let wait = server_wait
            .map_or(own, |d| d.min(MAX_RETRY_AFTER))
            .min(left);
        self.waited += wait;
        self.attempts += 1;
        Some(wait)
    }

    /// Attempts made so far (the one about to be made included, after [`Schedule::next_wait`]).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

/// The wait a server asks for: `retry-after-ms` (milliseconds), else `Retry-After` in seconds
/// or as an HTTP date (relative to `now`). Unparseable values are ignored.
pub(super) fn retry_after(
    milliseconds: Option<&str>,
    value: Option<&str>,
    now: time::OffsetDateTime,
) -> Option<Duration> {
    let seconds = |s: &str, scale: f64| {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| Duration::from_secs_f64((v / scale).min(1e6)))
    };
    if let Some(d) = milliseconds.and_then(|ms| seconds(ms, 1000.0)) {
        return Some(d);
    }
    let value = value?.trim();
    seconds(value, 1.0).or_else(|| {
        let date =
            time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822)
                .ok()?;
        let wait = date - now;
        Some(if wait.is_negative() {
            Duration::ZERO
        } else {
            wait.unsigned_abs()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_policy() -> RetryPolicy {
        RetryPolicy::from_settings(&EmbedderSettings::default())
    }

    #[test]
    fn the_default_budget_outlasts_a_server_restart() {
        let policy = default_policy();
        assert!(policy.window >= Duration::from_secs(60));
        assert!(
            policy.window >= Duration::from_secs(120),
            "issue 15: ≥ 2 min"
        );
        assert_eq!(policy.max_attempts, None);
        for _ in 0..20 {
            let mut schedule = policy.schedule();
            let waits: Vec<Duration> = std::iter::from_fn(|| schedule.next_wait(None)).collect();
            assert_eq!(waits.iter().sum::<Duration>(), policy.window, "{waits:?}");
            assert!(
                waits[0] >= DEFAULT_RETRY_BASE && waits[0] <= 2 * DEFAULT_RETRY_BASE,
                "{waits:?}"
            );
            assert!(
                waits.iter().all(|w| *w <= 2 * DEFAULT_RETRY_MAX_DELAY),
                "{waits:?}"
            );
            assert!(waits.len() >= 8, "{} attempts", waits.len() + 1);
            assert_eq!(schedule.attempts() as usize, waits.len() + 1);
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let policy = RetryPolicy {
            base: Duration::from_millis(500),
            max_delay: Duration::from_secs(4),
            window: Duration::from_secs(3600),
            max_attempts: None,
        };
        let mut schedule = policy.schedule();
        for retry in 0..12u32 {
            let wait = schedule.next_wait(None).unwrap();
            let full = (policy.base * 2u32.pow(retry)).min(policy.max_delay);
            assert!(
                wait >= full && wait <= 2 * full,
                "retry {retry}: {wait:?} vs {full:?}"
            );
        }
    }

    #[test]
    fn attempts_and_the_window_both_bound_a_schedule() {
        let policy = RetryPolicy {
            base: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
            window: Duration::from_secs(3600),
            max_attempts: Some(4),
        };
        let mut schedule = policy.schedule();
        assert_eq!(std::iter::from_fn(|| schedule.next_wait(None)).count(), 3);
        assert_eq!(schedule.attempts(), 4);

        let policy = RetryPolicy {
            window: Duration::from_millis(45),
            max_attempts: None,
            ..policy
        };
        let mut schedule = policy.schedule();
        let waits: Vec<Duration> = std::iter::from_fn(|| schedule.next_wait(None)).collect();
        assert_eq!(waits.iter().sum::<Duration>(), policy.window);
        assert!((3..=5).contains(&waits.len()), "{waits:?}");
    }

    #[test]
    fn the_servers_wait_replaces_the_backoff_capped_and_counted() {
        let policy = RetryPolicy {
            base: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            window: Duration::from_secs(100),
            max_attempts: None,
        };
        let mut schedule = policy.schedule();
        assert_eq!(
            schedule.next_wait(Some(Duration::from_secs(7))),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            schedule.next_wait(Some(Duration::from_secs(3600))),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            schedule.next_wait(Some(Duration::from_secs(3600))),
            Some(Duration::from_secs(33)),
            "cut to what is left of the window"
        );
        assert_eq!(schedule.next_wait(None), None);
    }

    #[test]
    fn retry_after_forms() {
        let now = time::macros::datetime!(2015-10-21 07:28:00 UTC);
        assert_eq!(
            retry_after(None, Some("2"), now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(None, Some(" 0.5 "), now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            retry_after(Some("250"), Some("9"), now),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_after(None, Some("Wed, 21 Oct 2015 07:28:07 GMT"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(None, Some("Wed, 21 Oct 2015 07:27:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(None, Some("soon"), now), None);
        assert_eq!(retry_after(None, Some("-1"), now), None);
        assert_eq!(retry_after(None, None, now), None);
    }
}
