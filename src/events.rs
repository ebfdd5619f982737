//! Operational events: what the daemon reports about itself in its log, rate-limited so that a
//! device or peer failing thousands of times a second costs one line per interval and a count.
//!
//! The pattern is that of Vector's internal events: one struct per kind of event, carrying what
//! its log line says and the counters it bumps, reported only through [`Event::emit`] (or
//! [`Event::emit_if`]), which bumps the counters and writes the line together. A counter on
//! /metrics and the log line that explains it therefore cannot drift apart. The structs live
//! beside the code that emits them (an `events` module of their own, so their log target stays
//! under the emitter's module path).

use std::time::{Duration, Instant};

/// An operational event: its counters and its log line.
pub trait Event: Sized {
    /// Bumps the event's counters (and sets the gauges it changes).
    fn count(&self);

    /// Writes the event's log line. `suppressed`: the lines its limiter held back since the
    /// last one (0 when the line is not rate-limited).
    fn log(&self, suppressed: u64);

    /// Counts the event, and logs it when `limiter` allows a line now (else the limiter counts
    /// the line it held back).
    fn emit(self, limiter: &mut LogLimiter) {
        self.count();
        if let Some(held) = limiter.allow() {
            self.log(held);
        }
    }

    /// Counts the event, and logs it when `log` says so: events logged once per change of
    /// state (a connection lost, a cause that changed) rather than per interval.
    fn emit_if(self, log: bool) {
        self.count();
        if log {
            self.log(0);
        }
    }
}

/// Allows one log line per `every`, counting what it held back.
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub const fn new(every: Duration) -> Self {
        LogLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last line)` when a line may be logged now.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    use super::*;

    struct Failed<'a> {
        counter: &'a AtomicU64,
        lines: &'a Mutex<Vec<u64>>,
    }

    impl Event for Failed<'_> {
        fn count(&self) {
            self.counter.fetch_add(1, Relaxed);
        }
        fn log(&self, suppressed: u64) {
            self.lines.lock().unwrap().push(suppressed);
        }
    }

    #[test]
    fn emit_counts_every_event_and_logs_one_line_per_interval() {
        let (counter, lines) = (AtomicU64::new(0), Mutex::new(Vec::new()));
        let mut limiter = LogLimiter::new(Duration::from_secs(3600));
        for _ in 0..5 {
            Failed {
                counter: &counter,
                lines: &lines,
            }
            .emit(&mut limiter);
        }
        assert_eq!(counter.load(Relaxed), 5);
        assert_eq!(*lines.lock().unwrap(), [0]);
        Failed {
            counter: &counter,
            lines: &lines,
        }
        .emit_if(true);
        Failed {
            counter: &counter,
            lines: &lines,
        }
        .emit_if(false);
        assert_eq!(counter.load(Relaxed), 7);
        assert_eq!(*lines.lock().unwrap(), [0, 0]);
    }

    #[test]
    fn the_next_line_tells_how_many_were_held_back() {
        let mut limiter = LogLimiter::new(Duration::from_millis(20));
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.allow(), None);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(limiter.allow(), Some(2));
    }
}
