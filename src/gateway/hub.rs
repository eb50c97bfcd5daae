//! Reaching sessions from the control thread.
//!
//! Sessions live on workers; the API runs on the control thread. Each
//! worker registers an [`Inbox`] in the [`Hub`] (held by `Shared`): an
//! unbounded crossbeam queue of [`Command`]s plus a wake socket. The control
//! thread pushes a command and, unless a wake is already pending, writes one
//! byte to the wake socket; the worker's inbox task waits for that socket to
//! become readable (a PollAdd on io_uring, epoll on the legacy driver), so a
//! command runs within a scheduling round trip, an idle worker pays one
//! pending poll and nothing else, and no lock is taken on either side.
//!
//! Why no shared session directory: the registry of a worker is a plain
//! `HashMap` only that worker touches, so opening and closing a session costs
//! no atomic, no lock and no cross-thread cache traffic. The directory is
//! needed only by API calls, which ask every worker through the same queue
//! with a reply channel and merge the answers: exact (no stale entries) at
//! the price of a worker round trip (well under a millisecond when workers
//! are not saturated) per listing.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

use crate::shared::epoch_ms;
use crate::worker::WorkerCtx;

use super::session::{unix_ms, Session};

/// Sessions of one worker, by their number (the id's last part).
#[derive(Default)]
pub struct Sessions {
    map: RefCell<HashMap<u64, Rc<Session>>>,
    next: Cell<u64>,
}

impl Sessions {
    /// A new session number.
    pub fn next(&self) -> u64 {
        let n = self.next.get() + 1;
        self.next.set(n);
        n
    }
    pub fn insert(&self, s: Rc<Session>) {
        self.map.borrow_mut().insert(s.n, s);
    }
    pub fn remove(&self, n: u64) {
        self.map.borrow_mut().remove(&n);
    }
    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// After a reload: sessions whose route left the config (or lost its
    /// `gateway`) get 1001 once `grace` has passed, as a drain would give.
    pub fn retire_removed(&self, live: &crate::shared::Live, now_ms: u64) {
        let grace = live.snapshot.shutdown_grace.as_millis() as u64;
        let at = now_ms + grace.saturating_sub(1_000).max(1);
        for s in self.map.borrow().values().filter(|s| !s.is_tcp()) {
            let kept = live
                .routes
                .iter()
                .any(|r| r.cfg.key == s.route.cfg.key && r.cfg.gateway.is_some());
            if !kept {
                s.drain_at(at);
            }
        }
    }

    fn get(&self, n: u64) -> Option<Rc<Session>> {
        self.map.borrow().get(&n).cloned()
    }
    fn all(&self) -> Vec<Rc<Session>> {
        self.map.borrow().values().cloned().collect()
    }
}

/// Which sessions a push or a listing is for.
#[derive(Debug, Clone)]
pub enum Target {
    Session(u64),
    User(String),
    Channel(String),
    Route(String),
    All,
}

/// A listing's filter (all given fields must match).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub route: Option<String>,
    pub user: Option<String>,
    pub channel: Option<String>,
}

/// `PATCH /api/sessions/<id>`.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    pub user: Option<String>,
    pub channels_add: Vec<String>,
    pub channels_remove: Vec<String>,
    pub settings: BTreeMap<String, String>,
    pub settings_remove: Vec<String>,
}

/// A session as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub id: String,
    pub route: String,
    pub client: String,
    /// Unix time, ms.
    pub connected_at: u64,
    pub user: String,
    pub channels: Vec<String>,
    pub settings: BTreeMap<String, String>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub pushed: u64,
    pub pings: u64,
    /// Unix time, ms.
    pub last_activity: u64,
    pub worker: usize,
}

/// What the control thread asks a worker; each carries its reply channel.
pub enum Command {
    List(Filter, Sender<Vec<Info>>),
    Get(u64, Sender<Option<Info>>),
    Patch(u64, Patch, Sender<Option<Info>>),
    /// A whole frame for the targets: replies (delivered, dropped).
    Push(Target, Bytes, Sender<(u64, u64)>),
    /// Close code and reason: replies whether the session existed.
    Close(u64, u16, String, Sender<bool>),
}

/// One worker's end of the hub, as the control thread holds it.
struct Inbox {
    tx: Sender<Command>,
    wake: std::os::unix::net::UnixStream,
    pending: AtomicBool,
}

/// The per-worker inboxes; see the module doc.
pub struct Hub {
    /// Prefix of every session id of this process: start time and pid, so
    /// ids stay unique across workers, restarts and upgrades.
    pub boot: String,
    inboxes: Box<[OnceLock<Inbox>]>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("boot", &self.boot).finish()
    }
}

impl Hub {
    pub fn new(workers: usize) -> Hub {
        Hub {
            boot: format!("{:x}{:x}", unix_ms(), std::process::id()),
            inboxes: (0..workers).map(|_| OnceLock::new()).collect(),
        }
    }

    pub fn workers(&self) -> usize {
        self.inboxes.len()
    }

    /// The id of session `n` of worker `w`.
    pub fn id(&self, w: usize, n: u64) -> String {
        format!("{}-{w}-{n}", self.boot)
    }

    /// Worker and number of an id of this process.
    pub fn parse_id(&self, id: &str) -> Option<(usize, u64)> {
        let rest = id.strip_prefix(&self.boot)?.strip_prefix('-')?;
        let (w, n) = rest.split_once('-')?;
        let w: usize = w.parse().ok()?;
        (w < self.inboxes.len()).then_some(())?;
        Some((w, n.parse().ok()?))
    }

    /// Control side: queues `cmd` for worker `w` and wakes it. False when the
    /// worker has no inbox (not started, or gone).
    pub fn send(&self, w: usize, cmd: Command) -> bool {
        let Some(inbox) = self.inboxes.get(w).and_then(|i| i.get()) else {
            return false;
        };
        if inbox.tx.send(cmd).is_err() {
            return false;
        }
        if !inbox.pending.swap(true, Ordering::SeqCst) {
            // Non-blocking: a full socket already holds a wake.
            let _ = (&inbox.wake).write(&[1]);
        }
        true
    }
}

/// Worker side: registers this worker's inbox and runs commands as they come.
pub async fn serve(ctx: Rc<WorkerCtx>) {
    let hub = &ctx.shared.gateway;
    let Some(slot) = hub.inboxes.get(ctx.id) else {
        return;
    };
    let (mine, theirs) = match std::os::unix::net::UnixStream::pair() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(worker = ctx.id, "gateway inbox: {e}");
            return;
        }
    };
    if let Err(e) = theirs.set_nonblocking(true).and(mine.set_nonblocking(true)) {
        tracing::error!(worker = ctx.id, "gateway inbox: {e}");
        return;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&mine);
    let wake = match monoio::net::UnixStream::from_std(mine) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(worker = ctx.id, "gateway inbox: {e}");
            return;
        }
    };
    let (tx, rx): (Sender<Command>, Receiver<Command>) = crossbeam_channel::unbounded();
    if slot
        .set(Inbox {
            tx,
            wake: theirs,
            pending: AtomicBool::new(false),
        })
        .is_err()
    {
        return;
    }
    let Some(inbox) = slot.get() else { return };
    let mut junk = Vec::with_capacity(64);
    loop {
        inbox.pending.store(false, Ordering::SeqCst);
        while let Ok(cmd) = rx.try_recv() {
            run(&ctx, cmd);
        }
        if wake.readable(false).await.is_err() {
            return;
        }
        loop {
            junk.clear();
            match crate::sys::recv_append(fd, &mut junk, 64) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
}

fn info(ctx: &WorkerCtx, s: &Session) -> Info {
    let st = s.stats.get();
    let age = epoch_ms().saturating_sub(st.last_activity_ms);
    Info {
        id: ctx.shared.gateway.id(ctx.id, s.n),
        route: s.route.cfg.name.clone(),
        client: s.client.to_string(),
        connected_at: s.connected_at,
        user: s.user.borrow().to_string(),
        channels: s.channels.borrow().iter().map(String::from).collect(),
        settings: s.settings.borrow().as_deref().cloned().unwrap_or_default(),
        messages_in: st.messages_in,
        messages_out: st.messages_out,
        bytes_in: st.bytes_in,
        bytes_out: st.bytes_out,
        pushed: st.pushed,
        pings: st.pings,
        last_activity: unix_ms().saturating_sub(age),
        worker: ctx.id,
    }
}

fn matches(s: &Session, f: &Filter) -> bool {
    f.route.as_ref().is_none_or(|r| &s.route.cfg.name == r)
        && f.user.as_ref().is_none_or(|u| **s.user.borrow() == **u)
        && f.channel
            .as_ref()
            .is_none_or(|c| s.channels.borrow().contains(c))
}

fn targeted(s: &Session, t: &Target) -> bool {
    if s.is_tcp() {
        return false;
    }
    match t {
        Target::Session(n) => s.n == *n,
        Target::User(u) => **s.user.borrow() == **u,
        Target::Channel(c) => s.channels.borrow().contains(c),
        Target::Route(r) => &s.route.cfg.name == r,
        Target::All => true,
    }
}

/// Runs one command on this worker. A reply whose receiver gave up is dropped.
fn run(ctx: &WorkerCtx, cmd: Command) {
    let sessions = &ctx.sessions;
    match cmd {
        Command::List(f, reply) => {
            let v = sessions
                .all()
                .iter()
                .filter(|s| matches(s, &f))
                .map(|s| info(ctx, s))
                .collect();
            let _ = reply.send(v);
        }
        Command::Get(n, reply) => {
            let _ = reply.send(sessions.get(n).map(|s| info(ctx, &s)));
        }
        Command::Patch(n, p, reply) => {
            let r = sessions.get(n).map(|s| {
                if let Some(u) = p.user {
                    *s.user.borrow_mut() = u.into_boxed_str();
                }
                if !p.channels_add.is_empty() || !p.channels_remove.is_empty() {
                    let mut ch = s.channels.borrow_mut();
                    ch.update(p.channels_add, &p.channels_remove);
                }
                {
                    let mut slot = s.settings.borrow_mut();
                    let set = slot.get_or_insert_with(Box::default);
                    set.extend(p.settings);
                    for k in &p.settings_remove {
                        set.remove(k);
                    }
                    if set.is_empty() {
                        *slot = None;
                    }
                }
                info(ctx, &s)
            });
            let _ = reply.send(r);
        }
        Command::Push(t, frame, reply) => {
            let (mut delivered, mut dropped) = (0u64, 0u64);
            // A tcp route's sessions take no pushes: not targets at all.
            let targets: Vec<Rc<Session>> = match t {
                Target::Session(n) => sessions
                    .get(n)
                    .into_iter()
                    .filter(|s| !s.is_tcp())
                    .collect(),
                ref t => sessions
                    .all()
                    .into_iter()
                    .filter(|s| targeted(s, t))
                    .collect(),
            };
            // Admitted first and answered, then sent: the API's answer does
            // not wait for thousands of sends (most go straight to the
            // client sockets, see `Session::push`).
            let mut admitted = Vec::with_capacity(targets.len());
            for s in targets {
                let Some(ok) = s
                    .route
                    .slots
                    .get(ctx.id)
                    .map(|slot| s.admit(&frame, &slot.gateway))
                else {
                    continue;
                };
                if ok {
                    delivered += 1;
                    admitted.push(s);
                } else {
                    dropped += 1;
                }
            }
            let _ = reply.send((delivered, dropped));
            for s in admitted {
                if let Some(slot) = s.route.slots.get(ctx.id) {
                    s.deliver(&frame, &slot.gateway);
                }
            }
        }
        Command::Close(n, code, reason, reply) => {
            let found = sessions.get(n).map(|s| {
                s.request_close(code, &reason, super::session::Reason::Api);
            });
            let _ = reply.send(found.is_some());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Hub;

    #[test]
    fn ids_name_their_worker_and_process() {
        let h = Hub::new(2);
        let id = h.id(1, 42);
        assert!(id.starts_with(&h.boot));
        assert_eq!(h.parse_id(&id), Some((1, 42)));
        assert_eq!(h.parse_id(&h.id(2, 1)), None, "no such worker");
        assert_eq!(h.parse_id("0-1-2"), None, "another process's id");
        assert_eq!(h.parse_id(&format!("{}-1-x", h.boot)), None);
        assert_eq!(h.parse_id(&format!("{}-1", h.boot)), None);
        // Nothing registered yet: a command goes nowhere.
        let (tx, _rx) = crossbeam_channel::bounded(1);
        assert!(!h.send(0, super::Command::Get(1, tx)));
    }
}
