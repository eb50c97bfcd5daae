//! The listening sockets of the process, as the control thread tracks them.
//!
//! The control thread binds every listener (one SO_REUSEPORT socket per
//! worker per address) and hands each worker its sockets with the published
//! config; it keeps a duplicate of every fd. The duplicates let a reload know
//! what is bound, and let a binary upgrade pass the very same sockets (and
//! their accept queues) to the next process. A removed address is closed for
//! good once both the control thread and the worker dropped their fds.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;

use crate::config::Snapshot;
use crate::shared::Handover;
use crate::worker::listener;

/// What [`ListenerSet::update`] changed.
#[derive(Debug, Default)]
pub struct Change {
    /// New sockets, one list per worker.
    pub handover: Vec<Handover>,
    pub added: Vec<SocketAddr>,
    pub removed: Vec<SocketAddr>,
    /// Addresses of the new config that could not be bound (they are retried
    /// by the next reload).
    pub failed: Vec<(SocketAddr, io::Error)>,
}

/// Every listening socket of the process, by address.
#[derive(Debug)]
pub struct ListenerSet {
    workers: usize,
    by_addr: BTreeMap<SocketAddr, Vec<OwnedFd>>,
}

impl ListenerSet {
    pub fn new(workers: usize) -> ListenerSet {
        ListenerSet {
            workers: workers.max(1),
            by_addr: BTreeMap::new(),
        }
    }

    /// Binds every listener of `snap` for start-up, reusing `inherited`
    /// sockets (from a previous process) for their addresses; fails on the
    /// first address that cannot be bound. Inherited sockets whose address
    /// the config no longer has are closed.
    pub fn bind_initial(
        &mut self,
        snap: &Snapshot,
        mut inherited: Vec<(SocketAddr, OwnedFd)>,
    ) -> Result<Vec<Handover>, (SocketAddr, io::Error)> {
        let mut handover: Vec<Handover> = (0..self.workers).map(|_| Vec::new()).collect();
        for l in &snap.listeners {
            let mine: Vec<OwnedFd> = {
                let (m, rest): (Vec<_>, Vec<_>) =
                    inherited.into_iter().partition(|(a, _)| *a == l.addr);
                inherited = rest;
                m.into_iter().map(|(_, fd)| fd).collect()
            };
            let socks = if mine.is_empty() {
                listener::ensure_free(l.addr).map_err(|e| (l.addr, e))?;
                self.bind_n(l.addr, snap.backlog, self.workers)
                    .map_err(|e| (l.addr, e))?
            } else {
                let extra = self.workers.saturating_sub(mine.len());
                let mut socks: Vec<TcpListener> = mine.into_iter().map(TcpListener::from).collect();
                socks.extend(
                    self.bind_n(l.addr, snap.backlog, extra)
                        .map_err(|e| (l.addr, e))?,
                );
                socks
            };
            self.adopt(l.addr, socks, &mut handover)
                .map_err(|e| (l.addr, e))?;
        }
        if !inherited.is_empty() {
            tracing::info!(
                count = inherited.len(),
                "closing inherited listeners the config no longer has"
            );
        }
        Ok(handover)
    }

    /// Brings the set in line with `snap`: binds added addresses on every
    /// worker, forgets removed ones (workers stop accepting on them when
    /// they pick up the config).
    pub fn update(&mut self, snap: &Snapshot) -> Change {
        let mut ch = Change {
            handover: (0..self.workers).map(|_| Vec::new()).collect(),
            ..Change::default()
        };
        let wanted: Vec<SocketAddr> = snap.listeners.iter().map(|l| l.addr).collect();
        let gone: Vec<SocketAddr> = self
            .by_addr
            .keys()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        for a in gone {
            self.by_addr.remove(&a);
            ch.removed.push(a);
        }
        for addr in wanted {
            if self.by_addr.contains_key(&addr) {
                continue;
            }
            let r = listener::ensure_free(addr)
                .and_then(|()| self.bind_n(addr, snap.backlog, self.workers))
                .and_then(|socks| self.adopt(addr, socks, &mut ch.handover));
            match r {
                Ok(()) => ch.added.push(addr),
                Err(e) => ch.failed.push((addr, e)),
            }
        }
        ch
    }

    /// Every socket, with its address (for a binary upgrade).
    pub fn sockets(&self) -> impl Iterator<Item = (SocketAddr, &OwnedFd)> {
        self.by_addr
            .iter()
            .flat_map(|(a, fds)| fds.iter().map(move |fd| (*a, fd)))
    }

    /// Drops our copies of every socket (workers still hold theirs).
    pub fn clear(&mut self) {
        self.by_addr.clear();
    }

    fn bind_n(&self, addr: SocketAddr, backlog: u32, n: usize) -> io::Result<Vec<TcpListener>> {
        (0..n).map(|_| listener::bind(addr, backlog)).collect()
    }

    /// Keeps a duplicate of each socket and deals the sockets out to the
    /// workers (more sockets than workers: some workers get two).
    fn adopt(
        &mut self,
        addr: SocketAddr,
        socks: Vec<TcpListener>,
        handover: &mut [Handover],
    ) -> io::Result<()> {
        let mut dups = Vec::with_capacity(socks.len());
        for s in &socks {
            dups.push(OwnedFd::from(s.try_clone()?));
        }
        for (i, s) in socks.into_iter().enumerate() {
            handover[i % handover.len()].push((addr, s));
        }
        self.by_addr.insert(addr, dups);
        Ok(())
    }
}
