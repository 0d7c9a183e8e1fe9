//! The auto-scaler's providers: who starts the hosts it adds and what
//! happens to the ones it removes.
//!
//! * `local`: `joule start --add --join THIS_HOST` processes on this
//!   machine, each with a data directory of its own under the provider's
//!   `dir` (`host-1`, `host-2`, ... never reused) and its output in
//!   `joule.log` there; they take this node's configuration file, k-factor
//!   and sites, and ports chosen at run time. Removed hosts stop by
//!   themselves; this node reaps the processes it started.
//! * `command`: the operator's command, run by `sh -c` with `add COUNT`
//!   (environment: `JOULE_JOIN`, the internal address to join;
//!   `JOULE_KFACTOR`, `JOULE_SITES`) or, once removed hosts have left, with
//!   `remove HOST…` (`JOULE_REMOVED`: `id=internal address` pairs, comma
//!   separated) so that the machines can be given back. A command that
//!   fails (or runs over five minutes) stops the change, with its output
//!   in the event.
//!
//! Either way the change is done once the metadata says so: added hosts
//! admitted and their partitions joined, removed hosts gone.

use super::Provider as Config;
use crate::cluster::Membership;
use crate::ServerContext;
use joule_cluster::{Command, CommandResult, HostId};
use joule_common::{bail, err, Result};
use std::collections::BTreeSet;
use std::process::Child;
use std::time::Duration;

/// How long added hosts may take to be admitted and join.
const ADD_PATIENCE: Duration = Duration::from_secs(180);
/// How long removed hosts may take to drain and leave.
const REMOVE_PATIENCE: Duration = Duration::from_secs(600);
/// How long the operator's command may run.
const COMMAND_PATIENCE: Duration = Duration::from_secs(300);

pub(super) struct Provider {
    config: Config,
    /// Processes the local provider started, not yet reaped.
    children: Vec<Child>,
}

impl Provider {
    pub fn new(ctx: &ServerContext) -> Provider {
        Provider { config: ctx.config.autoscale.provider.clone(), children: Vec::new() }
    }

    /// Reap the local processes that ended (removed hosts).
    pub fn reap(&mut self) {
        self.children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
    }

    /// Add `count` hosts (k+1 of them) and wait until they joined.
    pub async fn add(&mut self, ctx: &ServerContext, count: usize) -> Result<()> {
        let Membership::Member(node) = &ctx.membership else { bail!(InvalidArgument, "a single node cannot grow") };
        let m = node.metadata();
        let join = m
            .hosts
            .get(&node.id())
            .map(|h| h.internal_address.clone())
            .ok_or_else(|| err!(Unavailable, "this host is not in the metadata"))?;
        let (k, sites) = (m.kfactor, m.sites_per_host);
        let before = m.hosts.len();
        match &self.config {
            Config::Local { dir } => {
                let root = dir.clone().unwrap_or_else(|| ctx.config.dir.join("autoscale"));
                for _ in 0..count {
                    let child = start_local(ctx, &root, &join, k, sites)?;
                    self.children.push(child);
                }
            }
            Config::Command { command } => {
                let env = [
                    ("JOULE_JOIN", join.clone()),
                    ("JOULE_KFACTOR", k.to_string()),
                    ("JOULE_SITES", sites.to_string()),
                ];
                run_command(command, &["add".to_string(), count.to_string()], &env).await?;
            }
        }
        let joined = node
            .wait_for(ADD_PATIENCE, |m| m.hosts.len() >= before + count && !m.joining())
            .await
            .map_err(|_| err!(Unavailable, "the added hosts did not join within {} s", ADD_PATIENCE.as_secs()))?;
        let added: Vec<HostId> = joined.hosts.keys().copied().filter(|h| !m.hosts.contains_key(h)).collect();
        super::say(ctx, format!("hosts {added:?} joined; ranges move to them in the background"));
        Ok(())
    }

    /// Remove `hosts` (the last added) and wait until they left.
    pub async fn remove(&mut self, ctx: &ServerContext, hosts: BTreeSet<HostId>) -> Result<()> {
        let Membership::Member(node) = &ctx.membership else { bail!(InvalidArgument, "a single node cannot shrink") };
        let addresses: Vec<String> = {
            let m = node.metadata();
            hosts
                .iter()
                .map(|h| format!("{h}={}", m.hosts.get(h).map_or("", |i| i.internal_address.as_str())))
                .collect()
        };
        match node.propose_within(Command::RemoveHosts { hosts: hosts.clone() }, Duration::from_secs(10)).await? {
            CommandResult::Applied => {}
            CommandResult::Refused(why) => bail!(InvalidArgument, "the cluster refused the removal: {why}"),
        }
        node.wait_for(REMOVE_PATIENCE, |m| hosts.iter().all(|h| m.retired.contains(h)) || m.removing.is_none())
            .await
            .map_err(|_| err!(Unavailable, "hosts {hosts:?} did not leave within {} s", REMOVE_PATIENCE.as_secs()))?;
        let m = node.metadata();
        if !hosts.iter().all(|h| m.retired.contains(h)) {
            bail!(Unavailable, "the removal of hosts {hosts:?} was cancelled");
        }
        super::say(ctx, format!("hosts {hosts:?} left the cluster"));
        if let Config::Command { command } = &self.config {
            let mut args = vec!["remove".to_string()];
            args.extend(hosts.iter().map(|h| h.to_string()));
            run_command(command, &args, &[("JOULE_REMOVED", addresses.join(","))]).await?;
        }
        Ok(())
    }
}

/// Start one local host joining `join`, in a new directory under `root`.
fn start_local(ctx: &ServerContext, root: &std::path::Path, join: &str, k: u32, sites: u32) -> Result<Child> {
    std::fs::create_dir_all(root).map_err(|e| err!(IoError, "cannot create {}: {e}", root.display()))?;
    let dir = (1..)
        .map(|n| root.join(format!("host-{n}")))
        .find(|d| !d.exists())
        .ok_or_else(|| err!(Internal, "no free directory name under {}", root.display()))?;
    std::fs::create_dir_all(&dir).map_err(|e| err!(IoError, "cannot create {}: {e}", dir.display()))?;
    let log = std::fs::File::create(dir.join("joule.log"))
        .map_err(|e| err!(IoError, "cannot create {}: {e}", dir.join("joule.log").display()))?;
    let exe = std::env::current_exe().map_err(|e| err!(Internal, "cannot find the joule binary: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("start");
    if let Some(file) = &ctx.config.autoscale.config_file {
        cmd.arg("--config").arg(file);
    }
    cmd.args(["--add", "--join", join, "--kfactor", &k.to_string(), "--sites", &sites.to_string()])
        .arg("--dir")
        .arg(&dir)
        .args(["--host", &ctx.config.host])
        .args(["--client-port", "0", "--admin-port", "0", "--http-port", "0", "--internal-port", "0"])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| err!(IoError, "{e}"))?)
        .stderr(log);
    let child = cmd.spawn().map_err(|e| err!(Internal, "cannot start a local host: {e}"))?;
    super::say(ctx, format!("started a local host (process {}) in {}", child.id(), dir.display()));
    Ok(child)
}

/// Run the operator's `command` with `args` and `env`; an error names its
/// exit status and output.
pub(super) async fn run_command(command: &str, args: &[String], env: &[(&str, String)]) -> Result<()> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg(format!("{command} \"$@\"")).arg("joule-autoscale").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(COMMAND_PATIENCE, cmd.output())
        .await
        .map_err(|_| err!(Unavailable, "{command} {} ran over {} s", args.join(" "), COMMAND_PATIENCE.as_secs()))?
        .map_err(|e| err!(Unavailable, "cannot run {command}: {e}"))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(if out.stderr.is_empty() { &out.stdout } else { &out.stderr });
        bail!(Unavailable, "{command} {} failed ({}): {}", args.join(" "), out.status, said.trim());
    }
    Ok(())
}
