//! Pacing a rebalance by the latency of the calls it delays: the share of
//! the time moves may run, steered (between pieces, at most once a second)
//! by the p99 of the cluster's single-partition calls against `[elastic]
//! target_p99_ms`.
//!
//! Every piece holds the partitions it moves between, and the calls queued
//! on them wait for it. What that costs the calls' p99 depends on the load,
//! the rows and the machine: a fixed share of the time (`busy_percent`)
//! either costs a busy cluster its latency or slows an idle one's moves for
//! nothing. So the job samples the figures the auto-scaler decides by
//! (every host's running totals, [`crate::autoscale::Sampler`]; its own
//! pieces are multi-partition calls and are left out, and so is the work
//! replicas replay, which is no call) and steers its share
//! the way TCP steers its window:
//!
//! * the p99 above 70 % of the target: the share halves, though never below
//!   a fifth of `busy_percent` — a load that breaks the target with no move
//!   at all must not stop a move (the very scale-out it may be waiting for);
//! * the p99 at half the target or under, or no single-partition call at
//!   all: the share grows by a fifth of `busy_percent`, up to it;
//! * in between: it stays.
//!
//! The target is a bound for every second, not a level to settle at: a
//! second's p99 strays about a third either way from the one before under
//! the same share (a piece that meets a burst of calls), so a job that
//! steered *to* the target passed it in 2–7 seconds of 29 (a k=1 voter
//! load: 7.4–9.3 ms in the median second); steering to between half the
//! target and 70 % of it, in 0–2 of 29, the move running at about 0.83 of
//! the pace while the load lasts (docs/performance/elastic.md).
//!
//! A job with a target starts at the floor and grows from there (TCP's
//! slow start): before its first two samples it cannot know the load.
//!
//! The share, the last p99 and the lowest share of the job are in
//! `@Statistics REBALANCE`, and the job's end event gives the range the
//! share went through.

use crate::autoscale::{HostLoad, Sampler};
use crate::ServerContext;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the job samples the calls' figures.
const EVERY: Duration = Duration::from_secs(1);

/// The longest a sample may take (the hosts' answers have shorter limits of
/// their own): past it the share stays as it is.
const SAMPLE_LIMIT: Duration = Duration::from_secs(15);

/// The p99 above this many tenths of the target halves the share.
const CEILING_TENTHS: u32 = 7;

/// The p99 at or under this many tenths of the target lets the share grow.
const HEADROOM_TENTHS: u32 = 5;

/// Steers the share of the time a job's moves run (see the module doc).
pub(super) struct Governor {
    /// `None`: no target, the share stays at `cap`.
    target: Option<Duration>,
    /// `busy_percent`.
    cap: f64,
    share: f64,
    /// The lowest share this job ran at.
    lowest: f64,
    sampler: Sampler,
    sampled: Option<Instant>,
    /// A sample was read: the next one counts from it.
    primed: bool,
    last_p99: Option<Duration>,
}

impl Governor {
    pub fn new(target: Option<Duration>, busy_percent: u32) -> Governor {
        let cap = f64::from(busy_percent.clamp(1, 100));
        let share = starting_share(target, busy_percent);
        Governor {
            target,
            cap,
            share,
            lowest: share,
            sampler: Sampler::default(),
            sampled: None,
            primed: false,
            last_p99: None,
        }
    }

    /// The share of the time (percent) moves may run now, sampling the
    /// calls' figures first once a second has passed since the last
    /// sample. The first sample only sets where the next one counts from.
    pub fn share(&mut self, ctx: &Arc<ServerContext>) -> f64 {
        let Some(target) = self.target else { return self.cap };
        // (Stopping: the hosts' runtimes may be gone.)
        if self.sampled.is_some_and(|at| at.elapsed() < EVERY) || *ctx.shutdown.borrow() {
            return self.share;
        }
        self.sampled = Some(Instant::now());
        let Some(p99) = single_partition_p99(ctx, &mut self.sampler) else { return self.share };
        if self.primed {
            self.last_p99 = p99;
            self.share = steer(self.share, self.cap, target, p99);
            self.lowest = self.lowest.min(self.share);
        }
        self.primed = true;
        self.share
    }

    /// The p99 of the last interval sampled (`None`: none yet, or no call).
    pub fn last_p99(&self) -> Option<Duration> {
        self.last_p99
    }

    /// The lowest share this job ran at, and the highest it may.
    pub fn range(&self) -> (f64, f64) {
        (self.lowest, self.cap)
    }
}

/// The share a job starts at: with a target, the floor (a fifth of
/// `busy_percent`), growing from there as the p99 allows — the first
/// seconds of a job, before any sample, were its worst (a p99 of 15–22 ms
/// at k=1 while the rest held under 10); without one, `busy_percent`.
pub(crate) fn starting_share(target: Option<Duration>, busy_percent: u32) -> f64 {
    let cap = f64::from(busy_percent.clamp(1, 100));
    match target {
        Some(_) => floor(cap),
        None => cap,
    }
}

/// The lowest share under `cap`.
fn floor(cap: f64) -> f64 {
    (cap / 5.0).max(1.0).min(cap)
}

/// The next share after an interval whose single-partition calls had a p99
/// of `p99` (`None`: there were none), from `share`, under `cap`.
pub(super) fn steer(share: f64, cap: f64, target: Duration, p99: Option<Duration>) -> f64 {
    match p99 {
        Some(p) if p * 10 > target * CEILING_TENTHS => (share / 2.0).max(floor(cap)),
        Some(p) if p * 10 > target * HEADROOM_TENTHS => share,
        _ => (share + cap / 5.0).min(cap),
    }
}

/// The p99 of the cluster's single-partition calls since the last sample
/// (the inner `None`: no call); `None` if this host's own figures could not
/// be read.
fn single_partition_p99(ctx: &Arc<ServerContext>, sampler: &mut Sampler) -> Option<Option<Duration>> {
    let m = ctx.membership.metadata();
    let members: BTreeSet<u64> = m.hosts.keys().copied().chain([ctx.host_id]).collect();
    let loads = match &ctx.link {
        // A task of the runtime, not `block_on` from this thread: when the
        // process stops, its runtime may shut down in the middle of a
        // sample, and a timer polled by `block_on` then panics this thread.
        // A shut-down runtime drops the task, and with it the sender.
        Some(link) => {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let task_ctx = ctx.clone();
            link.runtime().spawn(async move {
                let _ = tx.send(crate::autoscale::gather(&task_ctx, &m, task_ctx.host_id).await);
            });
            rx.recv_timeout(SAMPLE_LIMIT).ok()??
        }
        None => BTreeMap::from([(ctx.host_id, HostLoad::of(&ctx.host.statistics(Duration::from_secs(5))))]),
    };
    Some(sampler.sample(&loads, &members).single_p99)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_halves_over_the_target_and_grows_back_under_it() {
        let ms = Duration::from_millis;
        let target = ms(10);
        // Over 70 % of the target: halved, down to a fifth of the cap.
        assert_eq!(steer(25.0, 25.0, target, Some(ms(14))), 12.5);
        assert_eq!(steer(12.5, 25.0, target, Some(ms(8))), 6.25);
        assert_eq!(steer(12.5, 25.0, target, Some(Duration::from_micros(7_001))), 6.25);
        assert_eq!(steer(6.25, 25.0, target, Some(ms(40))), 5.0);
        assert_eq!(steer(5.0, 25.0, target, Some(ms(40))), 5.0);
        // Between half the target and 70 % of it: kept.
        assert_eq!(steer(12.5, 25.0, target, Some(ms(7))), 12.5);
        assert_eq!(steer(12.5, 25.0, target, Some(ms(6))), 12.5);
        // At half of it or under, or no call: a fifth of the cap more, up to it.
        assert_eq!(steer(12.5, 25.0, target, Some(ms(5))), 17.5);
        assert_eq!(steer(22.5, 25.0, target, Some(ms(2))), 25.0);
        assert_eq!(steer(5.0, 25.0, target, None), 10.0);
        // A cap of 1 %: the floor is the cap.
        assert_eq!(steer(1.0, 1.0, target, Some(ms(40))), 1.0);
        // A cap of 100 % falls to 20 % at the lowest.
        let mut share = 100.0;
        for _ in 0..10 {
            share = steer(share, 100.0, target, Some(ms(50)));
        }
        assert_eq!(share, 20.0);
    }

    #[test]
    fn a_job_with_a_target_starts_at_the_floor() {
        let target = Some(Duration::from_millis(10));
        assert_eq!(starting_share(target, 25), 5.0);
        assert_eq!(starting_share(target, 100), 20.0);
        assert_eq!(starting_share(target, 3), 1.0);
        assert_eq!(starting_share(None, 25), 25.0);
        assert_eq!(Governor::new(target, 25).range(), (5.0, 25.0));
    }
}
