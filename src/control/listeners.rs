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

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(ports: &[u16]) -> Snapshot {
        let routes: Vec<String> = ports
            .iter()
            .map(|p| format!(r#""127.0.0.1:{p}": {{"protocol": "tcp", "backends": [{{"internal_port": "1"}}]}}"#))
            .collect();
        crate::config::parse(&format!(r#"{{"routes": {{{}}}}}"#, routes.join(","))).unwrap()
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn binds_per_worker_then_adds_removes_and_reports_failures() {
        let (a, b) = (free_port(), free_port());
        let mut set = ListenerSet::new(3);
        let h = set.bind_initial(&snapshot(&[a]), Vec::new()).unwrap();
        assert_eq!(h.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
        assert_eq!(set.sockets().count(), 3);
        // A second process may not share the port (SO_REUSEPORT both ways).
        assert!(ListenerSet::new(1)
            .bind_initial(&snapshot(&[a]), Vec::new())
            .is_err());

        let holder = std::net::TcpListener::bind(addr(b)).unwrap();
        let ch = set.update(&snapshot(&[b]));
        assert_eq!(ch.removed, [addr(a)]);
        assert!(ch.added.is_empty());
        assert_eq!(ch.failed.len(), 1, "{ch:?}");
        assert_eq!(set.sockets().count(), 0);
        drop(holder);
        drop(h);
        let ch = set.update(&snapshot(&[b]));
        assert_eq!(ch.added, [addr(b)]);
        assert_eq!(ch.handover.iter().map(Vec::len).sum::<usize>(), 3);
        // Unchanged: nothing to do.
        let ch = set.update(&snapshot(&[b]));
        assert!(ch.added.is_empty() && ch.removed.is_empty() && ch.failed.is_empty());
    }

    #[test]
    fn inherited_sockets_are_used_not_rebound() {
        let (a, gone) = (free_port(), free_port());
        // The old process had 3 workers on `a` and a port the new config drops.
        let old: Vec<(SocketAddr, OwnedFd)> = (0..3)
            .map(|_| (addr(a), OwnedFd::from(listener::bind(addr(a), 16).unwrap())))
            .chain(std::iter::once((
                addr(gone),
                OwnedFd::from(listener::bind(addr(gone), 16).unwrap()),
            )))
            .collect();
        let raw: Vec<i32> = old
            .iter()
            .map(|(_, f)| std::os::fd::AsRawFd::as_raw_fd(f))
            .collect();
        // Fewer workers: one of them takes two sockets, none is bound anew.
        let mut set = ListenerSet::new(2);
        let h = set.bind_initial(&snapshot(&[a]), old).unwrap();
        assert_eq!(h.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
        let used: Vec<i32> = h
            .iter()
            .flatten()
            .map(|(_, l)| std::os::fd::AsRawFd::as_raw_fd(l))
            .collect();
        assert!(
            used.iter().all(|fd| raw[..3].contains(fd)),
            "{used:?} {raw:?}"
        );
        // The dropped port is closed: nobody listens there any more.
        assert!(std::net::TcpStream::connect(addr(gone)).is_err());

        // More workers than inherited sockets: the rest are bound next to them.
        let b = free_port();
        let one = vec![(addr(b), OwnedFd::from(listener::bind(addr(b), 16).unwrap()))];
        let mut set = ListenerSet::new(3);
        let h = set.bind_initial(&snapshot(&[b]), one).unwrap();
        assert_eq!(h.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
    }
}
