//! The running gateway's Modbus link pollers, changed in place by a configuration reload.
//!
//! One task owns each link ([`LinkPoller`]). A reload removes and adds devices on a running
//! link through its control channel ([`LinkChange`]), between two polls, so the other devices
//! on that link keep their connection, schedule, request plan and online state: an unchanged
//! device polls on without a gap. A link left without devices is stopped (its connection
//! closed) and awaited before a new task may open the same port; a link nobody served before
//! gets a new task.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::link::Link;
use super::poller::{LinkChange, LinkPoller, PolledDevice, RecordSink};
use super::stats::DeviceStats;
use crate::device::{Device, DeviceSource};

/// How long a stopped link may take to close its connection before its task is aborted.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A device to poll: its slot (the `device` of its records), settings and counters.
#[derive(Clone)]
pub struct Member {
    pub slot: usize,
    pub device: Arc<Device>,
    pub stats: Arc<DeviceStats>,
}

impl Member {
    fn link(&self) -> Option<&Link> {
        match &self.device.source {
            DeviceSource::Modbus(m) => Some(&m.link),
            DeviceSource::Mqtt { .. } => None,
        }
    }

    fn polled(&self) -> Option<PolledDevice> {
        PolledDevice::new(self.slot, self.device.clone(), self.stats.clone())
    }
}

struct LinkTask {
    link: Link,
    members: Vec<Member>,
    control: mpsc::UnboundedSender<LinkChange>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// What [`Fleet::update`] did to the link tasks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FleetChange {
    /// Links whose task was started.
    pub started: usize,
    /// Links whose task was stopped.
    pub stopped: usize,
    /// Running links whose devices changed in place.
    pub changed: usize,
}

/// The link pollers. See the module documentation.
pub struct Fleet {
    links: Vec<LinkTask>,
    sink: RecordSink,
    /// The parent of every link's stop token (the gateway's shutdown).
    stop: CancellationToken,
}

impl Fleet {
    /// Starts one task per link for the Modbus devices among `members` (others are ignored).
    pub fn start(members: Vec<Member>, sink: RecordSink, stop: CancellationToken) -> Fleet {
        let mut fleet = Fleet {
            links: Vec::new(),
            sink,
            stop,
        };
        for (link, members) in group(members) {
            fleet.spawn(link, members);
        }
        fleet
    }

    /// Link tasks running.
    pub fn links(&self) -> usize {
        self.links.len()
    }

    fn spawn(&mut self, link: Link, members: Vec<Member>) {
        let polled: Vec<PolledDevice> = members.iter().filter_map(Member::polled).collect();
        let (control, rx) = mpsc::unbounded_channel();
        let stop = self.stop.child_token();
        let poller = LinkPoller::new(link.clone(), polled, self.sink.clone()).with_control(rx);
        let task = tokio::spawn(poller.run(stop.clone()));
        self.links.push(LinkTask {
            link,
            members,
            control,
            stop,
            task,
        });
    }

    /// Stops polling the devices in slots `remove` and starts polling `add`. Links keep
    /// running as long as they have a device; those left empty are stopped and awaited first,
    /// so that a port whose settings changed (a serial bus's baud rate) is closed before it is
    /// opened again.
    pub async fn update(&mut self, remove: &[usize], add: Vec<Member>) -> FleetChange {
        let mut change = FleetChange::default();
        let mut add: Vec<Member> = add.into_iter().filter(|m| m.link().is_some()).collect();
        let mut keep = Vec::with_capacity(self.links.len());
        let mut stopping = Vec::new();
        for mut lt in std::mem::take(&mut self.links) {
            let removed: Vec<usize> = lt
                .members
                .iter()
                .map(|m| m.slot)
                .filter(|s| remove.contains(s))
                .collect();
            lt.members.retain(|m| !removed.contains(&m.slot));
            // A device joins a link that keeps other devices when it is on the same port (as at
            // start-up); a link that lost all its devices takes new ones only with exactly its
            // settings.
            let (joining, rest): (Vec<Member>, Vec<Member>) =
                add.into_iter().partition(|m| match m.link() {
                    Some(l) if lt.members.is_empty() => *l == lt.link,
                    Some(l) => l.same_port(&lt.link),
                    None => false,
                });
            add = rest;
            if lt.members.is_empty() && joining.is_empty() {
                stopping.push(lt);
                continue;
            }
            if !removed.is_empty() || !joining.is_empty() {
                let polled: Vec<PolledDevice> = joining.iter().filter_map(Member::polled).collect();
                let sent = lt.control.send(LinkChange {
                    remove: removed,
                    add: polled,
                });
                if sent.is_err() {
                    // The task ended (it does not without being stopped): start it again.
                    warn!(link = %lt.link, "link poller had ended; starting it again");
                    add.extend(std::mem::take(&mut lt.members));
                    add.extend(joining);
                    stopping.push(lt);
                    continue;
                }
                lt.members.extend(joining);
                change.changed += 1;
            }
            keep.push(lt);
        }
        self.links = keep;
        for lt in stopping {
            info!(link = %lt.link, "no device left on the link: stopping its poller");
            change.stopped += 1;
            stop_task(lt).await;
        }
        for (link, members) in group(add) {
            change.started += 1;
            self.spawn(link, members);
        }
        change
    }

    /// Waits for every link task to end (after the shutdown token fired).
    pub async fn join(self) {
        for lt in self.links {
            let _ = lt.task.await;
        }
    }
}

async fn stop_task(lt: LinkTask) {
    lt.stop.cancel();
    let mut task = lt.task;
    if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
        warn!(link = %lt.link, "link poller did not stop in time; aborting it");
        task.abort();
        let _ = task.await;
    }
}

/// Groups Modbus members by port, as [`super::poller::group_by_link`] does.
fn group(members: Vec<Member>) -> Vec<(Link, Vec<Member>)> {
    let mut out: Vec<(Link, Vec<Member>)> = Vec::new();
    for m in members {
        let Some(link) = m.link().cloned() else {
            continue;
        };
        match out.iter_mut().find(|(l, _)| l.same_port(&link)) {
            Some((_, v)) => v.push(m),
            None => out.push((link, vec![m])),
        }
    }
    out
}
