//! The cluster primary's part of an in-place upgrade: pausing its
//! channels at frame boundaries, exporting workers, listeners and the
//! Socket.IO tables, and adopting them in the new image. The registry stays
//! owned by the primary: the upgrade only calls these functions.

use super::{bind, drain_worker, start_listener, wire, worker_reader, worker_spawned, Primary};
use crate::sticky::WorkerId;
use crate::supervisor::host::WorkerEvent;
use crate::upgrade::format::{IpcHandover, ListenerHandover, StickyAppHandover};
use node_ipc::{Channel, ChannelSnapshot, Limits, Mode};
use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;

/// What the primary hands over.
#[derive(Debug, Default)]
pub struct ClusterExport {
    /// By worker id.
    pub channels: HashMap<u32, IpcHandover>,
    pub listeners: Vec<ListenerHandover>,
    pub sticky_apps: Vec<StickyAppHandover>,
    pub next_wid: u32,
    pub msg_seq: u64,
}

impl Primary {
    /// Stops reading every worker channel at its next frame boundary.
    pub fn pause_channels(&self) {
        for w in self.reg().workers.values() {
            w.tx.pause_reading();
        }
    }

    /// Undoes [`Primary::pause_channels`] (the upgrade did not happen).
    pub fn resume_channels(&self) {
        for w in self.reg().workers.values() {
            w.tx.resume_reading();
        }
    }

    /// Connections accepted by cluster listeners and not settled yet.
    pub fn unsettled_connections(&self) -> usize {
        self.reg().listeners.values().map(|l| l.busy.load(Ordering::Acquire)).sum()
    }

    /// Everything the primary holds, if every open channel is at a quiet
    /// point; else the label of one that is not.
    pub fn export_handover(&self) -> Result<ClusterExport, String> {
        let reg = self.reg();
        let mut out =
            ClusterExport { next_wid: reg.next_wid, msg_seq: wire::peek_seq(), ..Default::default() };
        for (wid, w) in &reg.workers {
            if w.tx.is_closed() {
                // Its exit is on its way to the actor; the new image sees the
                // child gone and restarts it by policy.
                continue;
            }
            let Some(snap) = w.tx.snapshot() else {
                return Err(format!("the channel of worker {wid} (pm_id {}) is busy", w.pm_id));
            };
            out.channels.insert(
                *wid,
                IpcHandover {
                    wid: *wid,
                    fd: w.tx.raw_fd(),
                    mode: match w.tx.mode() {
                        Mode::Json => "json".into(),
                        Mode::Advanced => "advanced".into(),
                    },
                    v8_version: snap.version,
                    partial_in: snap.partial_in,
                    unsent_out: snap.unsent_out,
                    draining: w.draining,
                },
            );
        }
        for ((app, key), l) in &reg.listeners {
            out.listeners.push(ListenerHandover {
                app: app.clone(),
                key: key.clone(),
                fd: l.fd,
                kind: if l.unix_path.is_some() { "unix".into() } else { "tcp".into() },
                path: l.unix_path.as_ref().map(|p| p.to_string_lossy().into_owned()),
                members: l.members.iter().copied().collect(),
            });
        }
        for (name, sa) in &reg.apps {
            out.sticky_apps.push(StickyAppHandover {
                app: name.clone(),
                port: sa.port,
                enabled: sa.enabled,
                disabled: sa.disabled,
                group: sa.group.clone(),
                sessions: sa.router.export_sessions().into_iter().map(|(s, w)| (s, w.0)).collect(),
                ready: sa.relay.workers().filter(|w| sa.router.is_ready(*w)).map(|w| w.0).collect(),
                uids: sa.relay.export_uids().into_iter().map(|(u, n, w)| (u, n, w.0)).collect(),
                owns_port: reg.port_owner.get(&sa.port) == Some(name),
            });
        }
        Ok(out)
    }

    /// New image, first step: the counters and the listeners (their tasks
    /// start; members join as their workers are adopted).
    pub fn adopt_listeners(&self, next_wid: u32, msg_seq: u64, listeners: &[ListenerHandover]) {
        wire::resume_seq(msg_seq);
        let mut reg = self.reg();
        reg.next_wid = reg.next_wid.max(next_wid);
        for l in listeners {
            if l.fd < 0 {
                continue;
            }
            // SAFETY: the handover names this descriptor as a listening
            // socket the old image owned; nothing else in this image owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(l.fd) };
            let bound = match (&l.kind[..], &l.path) {
                ("unix", Some(p)) => {
                    bind::Bound::Unix(std::os::unix::net::UnixListener::from(fd), std::path::PathBuf::from(p))
                }
                _ => bind::Bound::Tcp(std::net::TcpListener::from(fd)),
            };
            let lid = (l.app.clone(), l.key.clone());
            let mut entry = start_listener(self, &lid, bound);
            // Members are recorded now so no listener closes before its
            // workers are back; their senders join in `adopt_worker`.
            entry.members = l.members.iter().copied().collect();
            reg.listeners.insert(lid, entry);
        }
    }

    /// Adopts one worker's channel: registered as at spawn, rejoined to its
    /// listeners, read again from where the old image stopped.
    pub fn adopt_worker(
        &self,
        ipc: &IpcHandover,
        who: crate::supervisor::host::WorkerInfo<'_>,
        events: mpsc::UnboundedSender<WorkerEvent>,
    ) -> Result<(), String> {
        let mode = if ipc.mode == "json" { Mode::Json } else { Mode::Advanced };
        if !ipc.partial_in.is_empty() || !ipc.unsent_out.is_empty() {
            crate::dlog::log(&format!(
                "App [{}]: {} bytes of a half-read message and {} unsent bytes carried over",
                who.label,
                ipc.partial_in.len(),
                ipc.unsent_out.len()
            ));
        }
        // SAFETY: the handover names this descriptor as this worker's
        // channel; nothing else in this image owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(ipc.fd) };
        let snap = ChannelSnapshot {
            version: ipc.v8_version,
            partial_in: ipc.partial_in.clone(),
            unsent_out: ipc.unsent_out.clone(),
        };
        let (tx, rx) = Channel::adopt(fd, mode, Limits::default(), snap)
            .map_err(|e| format!("channel of {}: {e}", who.label))?;
        let wid = ipc.wid;
        worker_spawned(self, wid, who.pm_id, who.pid, who.app, tx.clone());
        {
            let mut reg = self.reg();
            let lids: Vec<_> = reg
                .listeners
                .iter()
                .filter(|(_, l)| l.members.contains(&wid))
                .map(|(k, _)| k.clone())
                .collect();
            for lid in &lids {
                if let Some(l) = reg.listeners.get(lid) {
                    let _ = l.tx.send(super::listener::LCtl::Add(wid, tx.clone()));
                }
            }
            if let Some(w) = reg.workers.get_mut(&wid) {
                w.listeners = lids;
            }
        }
        if ipc.draining {
            drain_worker(self, wid, true);
        }
        if let Some(p) = self.arc() {
            tokio::spawn(worker_reader(p, wid, who.label.to_string(), rx, events));
        }
        Ok(())
    }

    /// Last step: the Socket.IO tables (after every worker is back).
    pub fn adopt_sticky(&self, apps: &[StickyAppHandover]) {
        let mut reg = self.reg();
        for a in apps {
            let owner = {
                let Some(sa) = reg.apps.get_mut(&a.app) else { continue };
                sa.enabled = a.enabled;
                sa.disabled = a.disabled;
                sa.group = a.group.clone();
                for w in &a.ready {
                    sa.router.set_ready(WorkerId(*w));
                }
                for (sid, w) in &a.sessions {
                    sa.router.import_session(WorkerId(*w), sid);
                }
                for (uid, nsp, w) in &a.uids {
                    sa.relay.import_uid(WorkerId(*w), uid, nsp);
                }
                a.owns_port.then_some(sa.port)
            };
            if let Some(port) = owner {
                reg.port_owner.insert(port, a.app.clone());
            }
        }
    }

    /// After an in-place update, once the bridge runs: it learns the sessions the workers
    /// hold. Its session records in Redis are kept alive by the image that wrote them (they
    /// expire after two minutes otherwise, and the other nodes could no longer forward these
    /// sessions' requests here).
    pub fn announce_sessions(&self) {
        let reg = self.reg();
        let Some(b) = reg.bridge.clone() else { return };
        for sa in reg.apps.values() {
            let Some(group) = sa.group.as_deref() else { continue };
            for (sid, _) in sa.router.export_sessions() {
                b.sid_owned(group, &sid);
            }
        }
    }
}
