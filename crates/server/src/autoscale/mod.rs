//! The auto-scaler: a cluster that adds hosts when its load breaks a
//! target and removes them when the load is gone, by a policy people can
//! read in the configuration (`[autoscale]`).
//!
//! The host that coordinates multi-partition transactions decides (one
//! decider per cluster; another host takes over with the coordination).
//! Every `interval` it samples the figures of every host that is up over
//! the interval just ended ([`Sampler`]; the other hosts send their running
//! totals over the data plane, `dataplane/load.rs`): the p99 of all the
//! calls the cluster answered (single- and multi-partition, from
//! acceptance to answer; the hosts' histograms merged, not their p99s
//! averaged) and how busy all the sites were (the share of the interval
//! they were not waiting for work). A host that does not answer within two
//! seconds is left out of that interval's figures, which say how many
//! hosts they cover.
//!
//! [`decide`] is a pure function of the policy, the figures and the
//! cluster's situation, so it is tested on its own:
//!
//! * **out** when the p99 is above `target_p99_ms` or the utilization above
//!   `target_utilization` for `intervals` intervals in a row: one addition
//!   of k+1 hosts (`step` additions at most per decision), up to
//!   `max_hosts`;
//! * **in** when both are at half their target or below (no call at all
//!   counts) for as many intervals: the hosts added last leave (removal is
//!   last added first, see `joule-cluster`'s `removal.rs`; one group of
//!   k+1 per decision), never below `min_hosts` or k+1 hosts;
//! * never while a rebalance runs, hosts join or leave, or a host is down,
//!   nor within `cooldown_s` of the last change.
//!
//! Every decision to act is an event with its reason and the figures behind
//! it (console, `joule status`, standard error); so is every reason not to
//! act when the figures ask for it, once per reason. `@Statistics
//! AUTOSCALER` shows the policy, the last figures and the last decision.
//!
//! Acting is the provider's part (`provider.rs`): `local` starts `joule`
//! processes on this machine with `--add` (and the removed ones stop by
//! themselves); `command` runs the operator's script with `add COUNT` or
//! `remove HOST…`, for real infrastructure. Removal goes through
//! `@ElasticRemove`'s path (`elastic.rs`) either way.

pub(crate) mod provider;

use crate::cluster::Membership;
use crate::ServerContext;
use hdrhistogram::Histogram;
use joule_cluster::{ClusterMetadata, HostId, HostState};
use joule_common::{err, DataType, Result, Value};
use joule_txn::stats::{new_histogram, SiteStats};
use joule_txn::ResultTable;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `[autoscale]`: the policy and the provider.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoscaleConfig {
    pub enabled: bool,
    pub provider: Provider,
    /// Percent of the sites' time busy.
    pub target_utilization: f64,
    pub target_p99: Duration,
    pub min_hosts: usize,
    pub max_hosts: usize,
    /// After a change, no other for this long.
    pub cooldown: Duration,
    /// Additions (of k+1 hosts) or removals per decision, at most.
    pub step: usize,
    /// How often the figures are sampled and a decision made.
    pub interval: Duration,
    /// Intervals in a row a target must be broken (or met with room to
    /// spare) before the scaler acts.
    pub intervals: u32,
    /// The configuration file this node started with, handed to the hosts
    /// the local provider starts (set by `joule start`).
    pub config_file: Option<PathBuf>,
}

/// Who adds and removes hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provider {
    /// `joule` processes on this machine, each with a data directory under
    /// `dir` (default: the node's data directory's `autoscale/`).
    Local { dir: Option<PathBuf> },
    /// The operator's command, run with `add COUNT` or `remove HOST…`.
    Command { command: String },
}

impl Default for AutoscaleConfig {
    fn default() -> Self {
        AutoscaleConfig {
            enabled: false,
            provider: Provider::Local { dir: None },
            target_utilization: 75.0,
            target_p99: Duration::from_millis(10),
            min_hosts: 1,
            max_hosts: 8,
            cooldown: Duration::from_secs(300),
            step: 1,
            interval: Duration::from_secs(10),
            intervals: 3,
            config_file: None,
        }
    }
}

/// `[autoscale]` as the file gives it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAutoscale {
    enabled: Option<bool>,
    provider: Option<String>,
    command: Option<String>,
    dir: Option<PathBuf>,
    target_utilization: Option<f64>,
    target_p99_ms: Option<f64>,
    min_hosts: Option<usize>,
    max_hosts: Option<usize>,
    cooldown_s: Option<f64>,
    step: Option<usize>,
    interval_ms: Option<u64>,
    intervals: Option<u32>,
}

/// Apply the file's `[autoscale]` over `config`, refusing what cannot work.
pub(crate) fn apply(config: &mut AutoscaleConfig, file: FileAutoscale) -> Result<()> {
    let bad = |what: &str| err!(InvalidArgument, "configuration: autoscale.{what}");
    if let Some(v) = file.enabled {
        config.enabled = v;
    }
    match (file.provider.as_deref(), file.command) {
        (Some("local") | None, None) => {
            if file.dir.is_some() || file.provider.is_some() {
                config.provider = Provider::Local { dir: file.dir };
            }
        }
        (Some("command"), Some(command)) if !command.trim().is_empty() => {
            config.provider = Provider::Command { command }
        }
        (Some("command"), _) => return Err(bad("provider \"command\" needs command = \"...\" (the script to run)")),
        (Some("local") | None, Some(_)) => return Err(bad("command is for provider = \"command\"")),
        (Some(other), _) => return Err(bad(&format!("provider must be \"local\" or \"command\", not {other:?}"))),
    }
    if let Some(v) = file.target_utilization {
        if !(v > 0.0 && v <= 100.0) {
            return Err(bad("target_utilization must be a percentage above 0 and at most 100"));
        }
        config.target_utilization = v;
    }
    if let Some(ms) = file.target_p99_ms {
        if !(ms > 0.0 && ms <= 3_600_000.0) {
            return Err(bad("target_p99_ms must be above 0 (and at most an hour)"));
        }
        config.target_p99 = Duration::from_secs_f64(ms / 1000.0);
    }
    if let Some(v) = file.min_hosts {
        config.min_hosts = v;
    }
    if let Some(v) = file.max_hosts {
        config.max_hosts = v;
    }
    if config.min_hosts == 0
        || config.min_hosts > config.max_hosts
        || config.max_hosts > joule_cluster::metadata::MAX_HOSTS
    {
        return Err(bad("min_hosts and max_hosts: 1 <= min_hosts <= max_hosts <= 1024"));
    }
    if let Some(s) = file.cooldown_s {
        if !(0.0..=86_400.0).contains(&s) {
            return Err(bad("cooldown_s must be between 0 and 86400"));
        }
        config.cooldown = Duration::from_secs_f64(s);
    }
    if let Some(v) = file.step {
        if v == 0 || v > 64 {
            return Err(bad("step must be between 1 and 64 (additions or removals per decision)"));
        }
        config.step = v;
    }
    if let Some(ms) = file.interval_ms {
        if !(100..=3_600_000).contains(&ms) {
            return Err(bad("interval_ms must be between 100 and 3600000"));
        }
        config.interval = Duration::from_millis(ms);
    }
    if let Some(v) = file.intervals {
        if v == 0 || v > 1000 {
            return Err(bad("intervals must be between 1 and 1000"));
        }
        config.intervals = v;
    }
    Ok(())
}

/// One interval's figures, over every host that reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Figures {
    /// Calls answered in the interval.
    pub calls: u64,
    /// Their p99 (`None`: no call).
    pub p99: Option<Duration>,
    /// The p99 of the single-partition calls alone (`None`: none): what a
    /// rebalance steers by (`crate::rebalance`), its own pieces being
    /// multi-partition calls.
    pub single_p99: Option<Duration>,
    /// Percent of the sites' time busy.
    pub utilization: f64,
    /// Hosts whose figures these are.
    pub hosts: usize,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.p99 {
            Some(p99) => write!(f, "p99 {:.2} ms over {} calls", p99.as_secs_f64() * 1000.0, self.calls)?,
            None => write!(f, "no calls")?,
        }
        write!(f, ", sites {:.0} % busy (figures of {} host(s))", self.utilization, self.hosts)
    }
}

/// One host's running totals: per site, the latency of every call it
/// answered since it started (keyed by partition; `None` is the
/// coordinator, whose calls are the multi-partition ones), and per site
/// (partition, time idle, time since start). The deciding host reads its
/// own; the others send theirs (`dataplane::load`). Kept per site so that a
/// site missing from one sample (busy past the wait) neither shrinks its
/// host's totals nor brings its whole history into the next interval.
#[derive(Clone, Debug)]
pub(crate) struct HostLoad {
    pub latency: Vec<(Option<u32>, Histogram<u64>)>,
    pub sites: Vec<(u32, Duration, Duration)>,
}

impl HostLoad {
    pub fn of(sites: &[SiteStats]) -> HostLoad {
        let latency = sites.iter().map(|s| (s.partition, s.latency.clone())).collect();
        let sites = sites.iter().filter_map(|s| Some((s.partition?, s.idle, s.since_start))).collect();
        HostLoad { latency, sites }
    }
}

/// Turns every host's running totals into one interval's figures.
#[derive(Default)]
pub(crate) struct Sampler {
    hosts: BTreeMap<HostId, HostSample>,
}

/// One host's totals at the last sample.
#[derive(Default)]
struct HostSample {
    /// Per site (see [`HostLoad`]), as last seen.
    latency: BTreeMap<Option<u32>, Histogram<u64>>,
    /// Per partition: (idle, since start).
    time: BTreeMap<u32, (Duration, Duration)>,
}

impl HostSample {
    /// This host's calls since the last sample (the first counts from its
    /// sites' start; all, and the single-partition ones), and its sites'
    /// (busy, elapsed) seconds.
    fn sample(&mut self, load: &HostLoad) -> (Histogram<u64>, Histogram<u64>, f64, f64) {
        let (mut interval, mut single) = (new_histogram(), new_histogram());
        for (site, now) in &load.latency {
            let gained = since(self.latency.get(site), now);
            let _ = interval.add(&gained);
            if site.is_some() {
                let _ = single.add(&gained);
            }
            self.latency.insert(*site, now.clone());
        }
        let (mut busy, mut total) = (0.0, 0.0);
        for (p, idle, since_start) in &load.sites {
            let (idle0, start0) = self.time.insert(*p, (*idle, *since_start)).unwrap_or_default();
            let (idle0, start0) =
                if *since_start < start0 { (Duration::ZERO, Duration::ZERO) } else { (idle0, start0) };
            let elapsed = since_start.saturating_sub(start0).as_secs_f64();
            total += elapsed;
            busy += (elapsed - idle.saturating_sub(idle0).as_secs_f64()).max(0.0);
        }
        (interval, single, busy, total)
    }
}

/// What a site's running totals `now` gained since `before` (none: since
/// it started). Totals only grow, unless the host restarted: then they
/// count afresh.
fn since(before: Option<&Histogram<u64>>, now: &Histogram<u64>) -> Histogram<u64> {
    let mut interval = now.clone();
    if let Some(before) = before {
        if interval.subtract(before).is_err() {
            interval = now.clone();
        }
    }
    interval
}

impl Sampler {
    /// The figures since the last sample, over the hosts in `loads` (one
    /// that missed a sample counts from its last one when it is back):
    /// every call's latency in one histogram, every site's time summed.
    /// Hosts no longer in `members` are forgotten.
    pub fn sample(&mut self, loads: &BTreeMap<HostId, HostLoad>, members: &BTreeSet<HostId>) -> Figures {
        self.hosts.retain(|h, _| members.contains(h));
        let (mut calls, mut singles) = (new_histogram(), new_histogram());
        let (mut busy, mut total) = (0.0, 0.0);
        for (host, load) in loads {
            let (interval, single, b, t) = self.hosts.entry(*host).or_default().sample(load);
            let _ = calls.add(&interval);
            let _ = singles.add(&single);
            busy += b;
            total += t;
        }
        let p99 = |h: &Histogram<u64>| (!h.is_empty()).then(|| Duration::from_micros(h.value_at_quantile(0.99)));
        Figures {
            calls: calls.len(),
            p99: p99(&calls),
            single_p99: p99(&singles),
            utilization: if total > 0.0 { busy / total * 100.0 } else { 0.0 },
            hosts: loads.len(),
        }
    }
}

/// What the cluster is doing, as the decision needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Situation {
    pub hosts: usize,
    /// k+1: hosts are added and removed this many at a time.
    pub copies: usize,
    /// Why no change may start now (a rebalance runs, hosts join...).
    pub busy: Option<String>,
    /// Time left before another change may start.
    pub cooling: Option<Duration>,
    /// The hosts that can leave now (the last added).
    pub removable: Option<BTreeSet<HostId>>,
}

impl Situation {
    pub fn of(m: &ClusterMetadata, rebalancing: bool, cooling: Option<Duration>) -> Situation {
        let busy = if rebalancing {
            Some("a rebalance is running".to_string())
        } else if m.joining() {
            Some("added hosts are still joining".to_string())
        } else if let Some(r) = &m.removing {
            Some(format!("hosts {:?} are being removed", r.hosts))
        } else {
            m.hosts.iter().find(|(_, h)| h.state != HostState::Up).map(|(id, h)| format!("host {id} is {:?}", h.state))
        };
        Situation {
            hosts: m.hosts.len(),
            copies: m.kfactor as usize + 1,
            busy,
            cooling,
            removable: m.removable_hosts(),
        }
    }
}

/// What the scaler does after an interval.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Decision {
    /// Add this many hosts (a multiple of k+1).
    Out { hosts: usize, why: String },
    /// Remove these hosts.
    In { hosts: BTreeSet<HostId>, why: String },
    /// Nothing; why, when the figures asked for a change.
    Hold(Option<Held>),
}

/// A change the figures asked for and something prevented.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Held {
    /// "out" or "in".
    pub change: &'static str,
    /// What prevented it (the same words while the same thing does).
    pub why: String,
    /// The figures that asked for it.
    pub figures: String,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "would scale {} ({}), but {}", self.change, self.figures, self.why)
    }
}

/// Intervals in a row above the targets, and at half of them or below.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Streaks {
    pub over: u32,
    pub under: u32,
}

/// The decision after an interval with figures `f` (see the module doc).
pub(crate) fn decide(policy: &AutoscaleConfig, streaks: &mut Streaks, f: &Figures, s: &Situation) -> Decision {
    let target_ms = policy.target_p99.as_secs_f64() * 1000.0;
    let p99_ms = f.p99.map(|d| d.as_secs_f64() * 1000.0);
    let slow = p99_ms.is_some_and(|ms| ms > target_ms);
    let busy = f.utilization > policy.target_utilization;
    let idle = p99_ms.is_none_or(|ms| ms <= target_ms / 2.0) && f.utilization <= policy.target_utilization / 2.0;
    streaks.over = if slow || busy { streaks.over + 1 } else { 0 };
    streaks.under = if idle { streaks.under + 1 } else { 0 };
    let figures = format!("{f}; {} hosts", s.hosts);
    let held = |change, why| Decision::Hold(Some(Held { change, why, figures: figures.clone() }));
    let blocked = match (&s.busy, s.cooling) {
        (Some(why), _) => Some(why.clone()),
        (None, Some(_)) => Some("the cooldown since the last change is not over".to_string()),
        (None, None) => None,
    };
    if streaks.over >= policy.intervals {
        let broken = match (slow, busy) {
            (true, _) => format!("p99 above the {target_ms} ms target"),
            (false, _) => format!("sites busier than the {} % target", policy.target_utilization),
        };
        if let Some(why) = blocked {
            return held("out", why);
        }
        if s.hosts + s.copies > policy.max_hosts {
            return held("out", format!("{} more would pass max_hosts = {}", s.copies, policy.max_hosts));
        }
        *streaks = Streaks::default();
        return Decision::Out {
            hosts: s.copies,
            why: format!("{broken} for {} intervals ({figures})", policy.intervals),
        };
    }
    if streaks.under >= policy.intervals {
        let floor = policy.min_hosts.max(s.copies);
        if s.hosts < floor + s.copies {
            // At the floor: nothing to say every interval.
            return Decision::Hold(None);
        }
        if let Some(why) = blocked {
            return held("in", why);
        }
        let Some(hosts) = s.removable.clone() else {
            let why = "no host can leave: the auto-scaler removes the hosts added last, and the last partitions are \
                       on hosts of the formation";
            return held("in", why.to_string());
        };
        *streaks = Streaks::default();
        return Decision::In {
            hosts,
            why: format!(
                "p99 and utilization at half their targets ({target_ms} ms, {} %) or below for {} intervals \
                 ({figures})",
                policy.target_utilization, policy.intervals
            ),
        };
    }
    Decision::Hold(None)
}

/// What `@Statistics AUTOSCALER` reports.
#[derive(Default)]
pub(crate) struct Autoscaler {
    state: Mutex<Report>,
}

#[derive(Default, Clone)]
struct Report {
    /// DECIDING, NOT_DECIDING (another host coordinates), SCALING_OUT,
    /// SCALING_IN, OFF.
    state: String,
    figures: Option<Figures>,
    last: Option<(Instant, String)>,
}

impl Autoscaler {
    fn set(&self, f: impl FnOnce(&mut Report)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// `@Statistics AUTOSCALER`: one row, with the host's cells first.
pub(crate) fn statistics(
    ctx: &ServerContext,
    host: Vec<Value>,
    host_columns: &[(&'static str, DataType)],
) -> ResultTable {
    let c = &ctx.config.autoscale;
    let r = ctx.autoscaler.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut columns: Vec<(&'static str, DataType)> = host_columns.to_vec();
    columns.extend([
        ("ENABLED", DataType::Integer),
        ("PROVIDER", DataType::Varchar),
        ("STATE", DataType::Varchar),
        ("HOSTS", DataType::Integer),
        ("MIN_HOSTS", DataType::Integer),
        ("MAX_HOSTS", DataType::Integer),
        ("TARGET_P99_MS", DataType::Float),
        ("TARGET_UTILIZATION", DataType::Float),
        ("P99_MS", DataType::Float),
        ("UTILIZATION", DataType::Float),
        ("CALLS", DataType::BigInt),
        ("REPORTING_HOSTS", DataType::Integer),
        ("LAST_DECISION", DataType::Varchar),
        ("LAST_DECISION_AGO_MS", DataType::BigInt),
    ]);
    let provider = match &c.provider {
        Provider::Local { .. } => "local",
        Provider::Command { .. } => "command",
    };
    let f = r.figures.clone().unwrap_or_default();
    let state = if !c.enabled {
        "OFF".to_string()
    } else if r.state.is_empty() {
        "STARTING".into()
    } else {
        r.state
    };
    let mut row = host;
    row.extend([
        Value::Integer(i64::from(c.enabled)),
        Value::from(provider),
        Value::from(state),
        Value::Integer(ctx.membership.metadata().hosts.len() as i64),
        Value::Integer(c.min_hosts as i64),
        Value::Integer(c.max_hosts as i64),
        Value::Float(c.target_p99.as_secs_f64() * 1000.0),
        Value::Float(c.target_utilization),
        f.p99.map_or(Value::Null, |d| Value::Float(d.as_secs_f64() * 1000.0)),
        Value::Float(f.utilization),
        Value::Integer(f.calls as i64),
        Value::Integer(f.hosts as i64),
        r.last.as_ref().map_or(Value::Null, |(_, s)| Value::from(s.as_str())),
        r.last.as_ref().map_or(Value::Null, |(at, _)| Value::Integer(at.elapsed().as_millis() as i64)),
    ]);
    let columns = columns
        .into_iter()
        .map(|(name, t)| joule_sql::plan::OutputColumn { name: name.to_string(), data_type: Some(t) })
        .collect::<Vec<_>>();
    ResultTable::new(columns.into(), vec![row])
}

/// Say `line` as the scaler's event, and keep it as the last decision.
fn say(ctx: &ServerContext, line: String) {
    let line = format!("autoscaler: {line}");
    eprintln!("joule: {line}");
    ctx.event(line.clone());
    ctx.autoscaler.set(|r| r.last = Some((Instant::now(), line)));
}

/// The scaler's loop (on every host of a cluster; only the coordinator's
/// decides). Ends with the node.
pub(crate) async fn run(ctx: Arc<ServerContext>) {
    let Membership::Member(node) = &ctx.membership else { return };
    let policy = ctx.config.autoscale.clone();
    let mut provider = provider::Provider::new(&ctx);
    let mut sampler = Sampler::default();
    let mut streaks = Streaks::default();
    let mut last_change: Option<Instant> = None;
    let mut said: Option<(&str, String)> = None;
    let mut shutdown = ctx.shutdown.subscribe();
    say(&ctx, format!("on: {}", describe(&policy)));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(policy.interval) => {}
            _ = shutdown.changed() => return,
        }
        provider.reap();
        let m = node.metadata();
        if m.mp_coordinator != Some(node.id()) {
            // Another host decides; start afresh if this one takes over.
            ctx.autoscaler.set(|r| r.state = format!("NOT_DECIDING (host {:?} decides)", m.mp_coordinator));
            (sampler, streaks) = (Sampler::default(), Streaks::default());
            continue;
        }
        let Some(loads) = gather(&ctx, &m, node.id()).await else { continue };
        let figures = sampler.sample(&loads, &m.hosts.keys().copied().collect());
        let cooling = last_change.and_then(|t| policy.cooldown.checked_sub(t.elapsed())).filter(|d| !d.is_zero());
        let situation = Situation::of(&m, crate::rebalance::running(&ctx), cooling);
        let decision = decide(&policy, &mut streaks, &figures, &situation);
        ctx.autoscaler.set(|r| {
            r.state = "DECIDING".into();
            r.figures = Some(figures.clone());
        });
        match decision {
            Decision::Hold(None) => {}
            Decision::Hold(Some(held)) => {
                let key = Some((held.change, held.why.clone()));
                if key != said {
                    say(&ctx, format!("holding: {held}"));
                    said = key;
                }
            }
            Decision::Out { hosts, why } => {
                said = None;
                ctx.autoscaler.set(|r| r.state = "SCALING_OUT".into());
                let additions = policy.step.min((policy.max_hosts - situation.hosts) / hosts).max(1);
                say(&ctx, format!("scale out by {} host(s): {why}", hosts * additions));
                for _ in 0..additions {
                    if let Err(e) = provider.add(&ctx, hosts).await {
                        say(&ctx, format!("the scale-out stopped: {e}"));
                        break;
                    }
                }
                last_change = Some(Instant::now());
            }
            Decision::In { hosts, why } => {
                said = None;
                ctx.autoscaler.set(|r| r.state = "SCALING_IN".into());
                say(&ctx, format!("scale in: hosts {hosts:?} leave: {why}"));
                if let Err(e) = provider.remove(&ctx, hosts).await {
                    say(&ctx, format!("the scale-in stopped: {e}"));
                }
                last_change = Some(Instant::now());
            }
        }
    }
}

/// This host's running totals and those of every other host that is up
/// and answers within two seconds (asked at once); `None` if this host's
/// own could not be read.
pub(crate) async fn gather(ctx: &ServerContext, m: &ClusterMetadata, me: HostId) -> Option<BTreeMap<HostId, HostLoad>> {
    let mut asking = tokio::task::JoinSet::new();
    if let Some(link) = &ctx.link {
        for id in m.hosts.keys().copied().filter(|h| *h != me && m.is_up(*h)) {
            let link = link.clone();
            asking.spawn(async move { (id, link.host_load(id).await) });
        }
    }
    let host = ctx.host.clone();
    let own = tokio::task::spawn_blocking(move || HostLoad::of(&host.statistics(Duration::from_secs(5)))).await.ok()?;
    let mut loads = BTreeMap::from([(me, own)]);
    while let Some(answer) = asking.join_next().await {
        // A host that does not answer is left out of this interval's
        // figures (they say how many hosts they cover).
        if let Ok((id, Ok(load))) = answer {
            loads.insert(id, load);
        }
    }
    Some(loads)
}

/// The policy in one line.
fn describe(p: &AutoscaleConfig) -> String {
    let provider = match &p.provider {
        Provider::Local { .. } => "local processes".to_string(),
        Provider::Command { command } => format!("command {command:?}"),
    };
    format!(
        "targets p99 {} ms and sites {} % busy over {} intervals of {} ms; {}..{} hosts, {} step(s) at a time, \
         cooldown {} s; provider: {provider}",
        p.target_p99.as_secs_f64() * 1000.0,
        p.target_utilization,
        p.intervals,
        p.interval.as_millis(),
        p.min_hosts,
        p.max_hosts,
        p.step,
        p.cooldown.as_secs_f64()
    )
}

#[cfg(test)]
mod tests;
