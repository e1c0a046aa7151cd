//! When to try a failed delivery again.
//!
//! A schedule of waits (by default Svix's: 5 s, 5 min, 30 min, 2 h, 5 h,
//! 10 h, 10 h after an immediate first attempt), each varied by ±20 % so
//! that outputs that failed together do not retry together. A receiver that
//! says when to come back (`Retry-After` on 429 or 503) is believed, up to a
//! cap, but never sooner than the schedule.

use std::time::Duration;

use rand::Rng;

/// The longest `Retry-After` honoured.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The receiver took it.
    Delivered,
    /// Try again after this wait.
    RetryAfter(Duration),
    /// The schedule is used up: the output is a dead letter.
    Dead,
    /// The receiver answered 410 Gone: delivery to the endpoint stops, and
    /// the output stays pending until an operator resumes it.
    Gone,
}

/// A retry schedule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RetryPolicy {
    schedule: Vec<Duration>,
}

impl RetryPolicy {
    /// A policy that waits `schedule[n]` before retry `n + 1`.
    pub(crate) fn new(schedule: Vec<Duration>) -> Self {
        RetryPolicy { schedule }
    }

    /// What follows a failed attempt that got `status` (`None`: no answer),
    /// the `attempts`-th in all, whose receiver asked to be retried after
    /// `retry_after`.
    pub(crate) fn after_failure(
        &self,
        status: Option<u16>,
        attempts: u32,
        retry_after: Option<Duration>,
    ) -> Verdict {
        if status == Some(410) {
            return Verdict::Gone;
        }
        match self.next_wait(attempts, retry_after) {
            Some(wait) => Verdict::RetryAfter(wait),
            None => Verdict::Dead,
        }
    }

    /// The wait before the next attempt, after `attempts` attempts have
    /// failed; `None` when the schedule is used up and the output is dead.
    pub(crate) fn next_wait(
        &self,
        attempts: u32,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let base = *self.schedule.get(attempts.checked_sub(1)? as usize)?;
        let jittered = base.mul_f64(rand::rng().random_range(0.8..=1.2));
        Some(match retry_after {
            Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
            None => jittered,
        })
    }
}

/// Parses a `Retry-After` value: seconds, or an HTTP date.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_retried_until_the_schedule_ends_and_gone_stops_at_once() {
        let policy = RetryPolicy::new(vec![Duration::from_secs(5)]);
        let Verdict::RetryAfter(wait) = policy.after_failure(Some(500), 1, None) else {
            panic!("the first failure is retried");
        };
        assert!((4..=6).contains(&wait.as_secs()), "{wait:?}");
        assert_eq!(policy.after_failure(None, 2, None), Verdict::Dead);
        assert_eq!(policy.after_failure(Some(410), 1, None), Verdict::Gone);
        assert_eq!(policy.after_failure(Some(410), 9, None), Verdict::Gone);
        let Verdict::RetryAfter(asked) =
            policy.after_failure(Some(503), 1, Some(Duration::from_secs(60)))
        else {
            panic!("a 503 is retried");
        };
        assert_eq!(asked, Duration::from_secs(60), "Retry-After is believed");
    }

    #[test]
    fn follows_the_schedule_with_jitter_then_gives_up() {
        let policy = RetryPolicy::new(vec![Duration::from_secs(5), Duration::from_secs(300)]);
        for _ in 0..100 {
            let first = policy.next_wait(1, None).unwrap();
            assert!((4.0..=6.0).contains(&first.as_secs_f64()), "{first:?}");
            let second = policy.next_wait(2, None).unwrap();
            assert!(
                (240.0..=360.0).contains(&second.as_secs_f64()),
                "{second:?}"
            );
        }
        assert_eq!(policy.next_wait(3, None), None);
        assert_eq!(policy.next_wait(0, None), None);
    }

    #[test]
    fn honours_retry_after_up_to_the_cap() {
        let policy = RetryPolicy::new(vec![Duration::from_secs(1)]);
        assert_eq!(
            policy.next_wait(1, Some(Duration::from_secs(60))),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            policy.next_wait(1, Some(Duration::from_secs(1 << 30))),
            Some(MAX_RETRY_AFTER)
        );
        let soon = policy.next_wait(1, Some(Duration::ZERO)).unwrap();
        assert!(
            soon >= Duration::from_millis(800),
            "never sooner than the schedule"
        );
    }

    #[test]
    fn parses_both_forms_of_retry_after() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
