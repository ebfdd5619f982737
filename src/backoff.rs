//! Exponential backoff for reconnects and retries, the one the whole gateway uses: the Modbus
//! links, the MQTT connection, the database forwarder and the work-order notifiers.
//!
//! Each wait has a step that starts at `initial` and grows by `factor` with every failure up
//! to `max`; with jitter a wait is a random share of its step (50-100 % by default), so that
//! many clients that failed together do not retry in step. A success resets it.
//!
//! Ground-floor vocabulary: it depends on nothing else in the crate.

use std::time::Duration;

use rand::Rng;

/// An exponential backoff: its settings and the failures counted so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: u32,
    /// The share of its step a wait may fall short by: 0.5 gives waits of 50-100 % of the
    /// step, 0 none (the step itself).
    jitter: f64,
    failures: u32,
}

impl Backoff {
    /// Doubling from `initial` up to `max`, each wait 50-100 % of its step.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            factor: 2,
            jitter: 0.5,
            failures: 0,
        }
    }

    /// Grows the step by `factor` per failure instead of doubling it (0 counts as 1: a
    /// constant step).
    pub const fn factor(mut self, factor: u32) -> Self {
        self.factor = if factor == 0 { 1 } else { factor };
        self
    }

    /// Waits between `(1 - share)` and all of their step (`share` is taken within 0-1; 0: no
    /// jitter).
    pub const fn jitter(mut self, share: f64) -> Self {
        self.jitter = share;
        self
    }

    /// Waits of exactly their step.
    pub const fn without_jitter(self) -> Self {
        self.jitter(0.0)
    }

    /// The step after `failures` failures, before jitter: `initial * factor^failures`, at
    /// most `max`. Saturates instead of overflowing, whatever the count.
    pub fn step_after(&self, failures: u32) -> Duration {
        self.initial
            .saturating_mul(self.factor.saturating_pow(failures))
            .min(self.max)
    }

    /// The step of the next wait, before jitter (the longest the next wait can be).
    pub fn step(&self) -> Duration {
        self.step_after(self.failures)
    }

    /// A wait after `failures` earlier failures, jittered, without counting anything: for a
    /// caller that keeps the count itself (a retry count stored with the work it retries).
    pub fn delay(&self, failures: u32) -> Duration {
        let step = self.step_after(failures);
        if self.jitter.is_nan() || self.jitter <= 0.0 {
            return step;
        }
        let low = 1.0 - self.jitter.min(1.0);
        step.mul_f64(rand::rng().random_range(low..=1.0))
    }

    /// The wait before the next attempt, counting one more failure.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    /// Back to the initial step (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures counted since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_steps_double_up_to_the_cap_without_overflow() {
        let b = Backoff::new(MS * 200, Duration::from_secs(30));
        let steps: Vec<u128> = (0..10).map(|n| b.step_after(n).as_millis()).collect();
        assert_eq!(
            steps,
            [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
        for n in [31, 32, 64, 1000, u32::MAX] {
            assert_eq!(b.step_after(n), Duration::from_secs(30), "{n}");
        }
        // A cap below the initial step wins.
        assert_eq!(Backoff::new(MS * 10, MS * 5).step_after(0), MS * 5);
    }

    #[test]
    fn backoff_factor_is_configurable() {
        let b = Backoff::new(MS, Duration::from_secs(1)).factor(3);
        assert_eq!(
            (0..4).map(|n| b.step_after(n)).collect::<Vec<_>>(),
            [MS, MS * 3, MS * 9, MS * 27]
        );
        let flat = Backoff::new(MS * 7, Duration::from_secs(1)).factor(0);
        assert_eq!(flat.step_after(5), MS * 7);
    }

    #[test]
    fn backoff_jitter_stays_within_its_share_of_the_step() {
        let b = Backoff::new(MS * 100, Duration::from_secs(10));
        let quarter = b.clone().jitter(0.25);
        for n in 0..12 {
            let step = b.step_after(n);
            for _ in 0..50 {
                let d = b.delay(n);
                assert!(d >= step / 2 && d <= step, "{n}: {d:?} vs {step:?}");
                let d = quarter.delay(n);
                assert!(
                    d >= step.mul_f64(0.75) && d <= step,
                    "{n}: {d:?} vs {step:?}"
                );
            }
        }
        // Out-of-range shares are taken within 0-1.
        let all = b.clone().jitter(7.0);
        assert!((0..50).all(|_| all.delay(3) <= b.step_after(3)));
        for share in [0.0, -1.0, f64::NAN] {
            assert_eq!(b.clone().jitter(share).delay(3), b.step_after(3), "{share}");
        }
    }

    #[test]
    fn backoff_counts_failures_and_resets() {
        let mut b = Backoff::new(MS * 250, Duration::from_secs(5)).without_jitter();
        let waits: Vec<Duration> = (0..7).map(|_| b.next_wait()).collect();
        assert_eq!(
            waits,
            [
                MS * 250,
                MS * 500,
                MS * 1000,
                MS * 2000,
                MS * 4000,
                MS * 5000,
                MS * 5000
            ]
        );
        assert_eq!(b.failures(), 7);
        assert_eq!(b.step(), Duration::from_secs(5));
        b.reset();
        assert_eq!((b.failures(), b.step()), (0, MS * 250));
        assert_eq!(b.next_wait(), MS * 250);

        // With jitter: each wait is within its step, and the count moves the same way.
        let mut b = Backoff::new(MS * 500, Duration::from_secs(30));
        for n in 0..20 {
            let step = b.step();
            assert_eq!(step, b.step_after(n));
            let w = b.next_wait();
            assert!(w >= step / 2 && w <= step, "{n}: {w:?}");
        }
    }

    #[test]
    fn backoff_delay_does_not_count() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300)).without_jitter();
        assert_eq!(b.delay(4), Duration::from_secs(16));
        assert_eq!(b.delay(4), Duration::from_secs(16));
        assert_eq!(b.failures(), 0);
    }
}
