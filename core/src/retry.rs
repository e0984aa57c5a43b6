//! Delays between job attempts: exponential backoff with jitter, from the `backoff` crate.

use std::time::Duration;

use backoff::backoff::Backoff;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The delay before the attempt after `attempts_done` attempts (1 = after the first).
    pub fn delay_after(&self, attempts_done: u32) -> Duration {
        let mut b = backoff::ExponentialBackoff {
            current_interval: self.initial,
            initial_interval: self.initial,
            randomization_factor: 0.25,
            multiplier: 2.0,
            max_interval: self.max,
            max_elapsed_time: None,
            ..Default::default()
        };
        let mut delay = self.initial;
        for _ in 0..attempts_done.max(1) {
            delay = b.next_backoff().unwrap_or(self.max);
        }
        delay.min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_and_stays_bounded() {
        let p = RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        let first = p.delay_after(1);
        assert!(
            first >= Duration::from_millis(750) && first <= Duration::from_millis(1250),
            "{first:?}"
        );
        let third = p.delay_after(3);
        assert!(
            third >= Duration::from_secs(3) && third <= Duration::from_secs(5),
            "{third:?}"
        );
        assert!(p.delay_after(30) <= Duration::from_secs(60));
        // Jitter: not every delay is the same.
        let samples: std::collections::HashSet<_> = (0..20).map(|_| p.delay_after(2)).collect();
        assert!(samples.len() > 1);
    }
}
