//! When a link poller wakes for a device that falls due.
//!
//! Every wake-up of the gateway costs a trip through the kernel (an `epoll_wait` that
//! returns, often a context switch), and that cost dominates a large fleet's CPU: 1,000
//! devices polled every second on their own phases wake the process about once a millisecond.
//! Polls are therefore started on a shared grid: a device falling due sleeps until the next
//! multiple of its slack, counted from one instant common to the whole process, so the devices
//! of every link that fall due within one slot start together and the process wakes once for
//! all of them. The slack is a fiftieth of the device's interval (2 % of it), at most
//! [`MAX_SLACK`]: a device polled every second starts up to 20 ms after its due time, one
//! polled every 100 ms up to 2 ms. The schedule itself is not moved (the next due time is
//! still the last one plus the interval), so the slack never accumulates into drift, and a
//! reading's timestamp is the time it was read.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// The largest slack, whatever the interval.
pub const MAX_SLACK: Duration = Duration::from_millis(20);

/// The instant the grid counts from: the first time any poller asked.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The slack of a device polled every `interval`: a fiftieth of it, at most [`MAX_SLACK`].
pub fn slack(interval: Duration) -> Duration {
    (interval / 50).min(MAX_SLACK)
}

/// When to wake for a poll due at `due`, for a device polled every `interval`: `due` rounded up
/// to the next multiple of the slack on the process-wide grid.
pub fn wake_at(due: Instant, interval: Duration) -> Instant {
    align(epoch(), due, slack(interval))
}

fn align(epoch: Instant, due: Instant, slack: Duration) -> Instant {
    let step = slack.as_nanos();
    if step == 0 || due <= epoch {
        return due;
    }
    let since = (due - epoch).as_nanos();
    let slots = since.div_ceil(step);
    // Saturates instead of overflowing: a due time centuries away stays one.
    let offset = u64::try_from(slots.saturating_mul(step)).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_is_two_percent_of_the_interval_capped() {
        assert_eq!(slack(Duration::from_millis(100)), Duration::from_millis(2));
        assert_eq!(slack(Duration::from_millis(500)), Duration::from_millis(10));
        assert_eq!(slack(Duration::from_secs(1)), MAX_SLACK);
        assert_eq!(slack(Duration::from_secs(60)), MAX_SLACK);
        assert_eq!(slack(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn due_times_in_one_slot_wake_together_and_never_early() {
        let e = Instant::now();
        let s = Duration::from_millis(20);
        let at = |ms: u64| e + Duration::from_millis(ms);
        // 1 ms and 19 ms after a grid line wake at the next one; a due time on the grid wakes
        // on it.
        assert_eq!(align(e, at(101), s), at(120));
        assert_eq!(align(e, at(119), s), at(120));
        assert_eq!(align(e, at(120), s), at(120));
        assert_eq!(align(e, at(121), s), at(140));
        for ms in 0..200 {
            let w = align(e, at(ms), s);
            assert!(w >= at(ms) && w < at(ms) + s, "{ms} ms woke at {:?}", w - e);
        }
    }

    #[test]
    fn without_slack_or_before_the_epoch_the_due_time_stands() {
        let e = Instant::now() + Duration::from_secs(1);
        let due = e - Duration::from_millis(5);
        assert_eq!(align(e, due, Duration::from_millis(20)), due);
        assert_eq!(
            align(e, e + Duration::from_millis(7), Duration::ZERO),
            e + Duration::from_millis(7)
        );
    }
}
