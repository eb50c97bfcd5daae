//! Session ticket keys: one set per process (every worker, every TLS port),
//! rotated every [`ROTATE`] with the previous key still accepted, handed to
//! the successor of a binary upgrade, or read from operator files shared by
//! a fleet (nginx's `ssl_session_ticket_key`, HAProxy's `tls-ticket-keys`).
//!
//! rustls's own `Ticketer` makes its keys inside and never shows them, so a
//! client holding a ticket from before `ringmesh upgrade`, or from another
//! node behind the same L4 balancer, had to do a full handshake. This is the
//! same construction with keys we own: a ticket is
//! `key name (16) | nonce (12) | AES-256-GCM(state) | tag (16)`, the name as
//! associated data; the nonce is random per ticket (2^32 tickets per key
//! keep the collision odds negligible, and keys rotate long before that).
//! The AEAD is aws-lc-rs's, the provider rustls already uses here.
//!
//! Key material (48 bytes: 16 name, 32 AES key) never leaves the process
//! except over the upgrade's private socket pair; it is not logged and not
//! shown by the API.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// Raw key material: 16-byte name, then the 32-byte AES-256 key.
pub const KEY_LEN: usize = 48;
const NAME_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// A fresh key every 6 hours (rustls's and nginx's usual figure); tickets of
/// the previous key still resume, so a ticket lives 6 to 12 hours.
pub const ROTATE: Duration = Duration::from_secs(6 * 3600);

struct Key {
    raw: [u8; KEY_LEN],
    aead: LessSafeKey,
}

impl Key {
    fn from_raw(raw: [u8; KEY_LEN]) -> Option<Key> {
        let unbound = UnboundKey::new(&AES_256_GCM, &raw[NAME_LEN..]).ok()?;
        Some(Key {
            raw,
            aead: LessSafeKey::new(unbound),
        })
    }

    fn random() -> Option<Key> {
        let mut raw = [0u8; KEY_LEN];
        SystemRandom::new().fill(&mut raw).ok()?;
        Key::from_raw(raw)
    }

    fn name(&self) -> &[u8] {
        &self.raw[..NAME_LEN]
    }
}

struct State {
    /// Encrypts new tickets; decrypts too.
    current: Key,
    /// Decrypt only: the key before the last rotation, or the operator's
    /// older files.
    older: Vec<Key>,
    /// Unix seconds `current` was made (rotating sets only).
    created: u64,
}

/// A ticket key set: rotating (the process's own) or fixed (operator files,
/// rotated by whoever writes the files, as with nginx).
pub struct TicketKeys {
    state: RwLock<State>,
    rotating: bool,
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material.
        f.debug_struct("TicketKeys")
            .field("rotating", &self.rotating)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TicketKeys {
    fn rotating_from(current: Key, previous: Option<Key>, created: u64) -> TicketKeys {
        TicketKeys {
            state: RwLock::new(State {
                current,
                older: previous.into_iter().collect(),
                created,
            }),
            rotating: true,
        }
    }

    /// A fresh rotating set (a process started without a predecessor).
    pub fn generate() -> Option<TicketKeys> {
        Some(Self::rotating_from(Key::random()?, None, now_secs()))
    }

    /// A fixed set from operator files: the first encrypts, all decrypt.
    /// Each file holds 48 or 80 bytes (`openssl rand 80 > ticket.key`, the
    /// size nginx uses): the first 16 are the key's name, the last 32 the
    /// AES-256 key. Errors name the file.
    pub fn from_files(paths: &[impl AsRef<Path>]) -> Result<TicketKeys, (usize, String)> {
        let mut keys = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let p = p.as_ref();
            let bytes =
                std::fs::read(p).map_err(|e| (i, format!("cannot read {}: {e}", p.display())))?;
            if bytes.len() != 48 && bytes.len() != 80 {
                return Err((
                    i,
                    format!(
                        "{}: {} bytes; a ticket key file holds 48 or 80 random bytes (openssl rand 80 > file)",
                        p.display(),
                        bytes.len()
                    ),
                ));
            }
            let mut raw = [0u8; KEY_LEN];
            raw[..NAME_LEN].copy_from_slice(&bytes[..NAME_LEN]);
            raw[NAME_LEN..].copy_from_slice(&bytes[bytes.len() - 32..]);
            let key = Key::from_raw(raw).ok_or((i, "unusable key".to_string()))?;
            keys.push(key);
        }
        let mut keys = keys.into_iter();
        let current = keys
            .next()
            .ok_or((0, "expected at least one file".to_string()))?;
        Ok(TicketKeys {
            state: RwLock::new(State {
                current,
                older: keys.collect(),
                created: 0,
            }),
            rotating: false,
        })
    }

    fn maybe_rotate(&self) {
        if !self.rotating {
            return;
        }
        let due = |s: &State| now_secs().saturating_sub(s.created) >= ROTATE.as_secs();
        if !self.state.read().map(|s| due(&s)).unwrap_or(false) {
            return;
        }
        let Ok(mut s) = self.state.write() else {
            return;
        };
        if !due(&s) {
            return; // another thread rotated first
        }
        if let Some(fresh) = Key::random() {
            let old = std::mem::replace(&mut s.current, fresh);
            s.older = vec![old];
            s.created = now_secs();
        }
    }

    /// The rotating set as text for an upgrade's successor:
    /// `created:hex(current)[:hex(previous)]`. `None` for a fixed set (the
    /// successor reads the same files).
    pub fn export(&self) -> Option<String> {
        if !self.rotating {
            return None;
        }
        let s = self.state.read().ok()?;
        let mut out = format!("{}:{}", s.created, hex(&s.current.raw));
        if let Some(prev) = s.older.first() {
            out.push(':');
            out.push_str(&hex(&prev.raw));
        }
        Some(out)
    }

    /// The inverse of [`TicketKeys::export`].
    pub fn import(text: &str) -> Option<TicketKeys> {
        let mut parts = text.split(':');
        let created: u64 = parts.next()?.parse().ok()?;
        let current = Key::from_raw(unhex(parts.next()?)?)?;
        let previous = match parts.next() {
            Some(p) => Some(Key::from_raw(unhex(p)?)?),
            None => None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self::rotating_from(current, previous, created))
    }
}

impl ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        ROTATE.as_secs() as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.maybe_rotate();
        let s = self.state.read().ok()?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut body = Vec::with_capacity(plain.len() + TAG_LEN);
        body.extend_from_slice(plain);
        s.current
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(s.current.name()),
                &mut body,
            )
            .ok()?;
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + body.len());
        out.extend_from_slice(s.current.name());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        // Attacker-controlled: every length is checked before slicing.
        if cipher.len() < NAME_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (name, rest) = cipher.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let s = self.state.read().ok()?;
        let key = std::iter::once(&s.current)
            .chain(s.older.iter())
            .find(|k| k.name() == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = key
            .aead
            .open_in_place(nonce, Aad::from(name), &mut buf)
            .ok()?;
        let n = plain.len();
        buf.truncate(n);
        Some(buf)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; KEY_LEN]> {
    if s.len() != KEY_LEN * 2 {
        return None;
    }
    let mut out = [0u8; KEY_LEN];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

static PROCESS: OnceLock<Option<Arc<TicketKeys>>> = OnceLock::new();

/// The process's rotating key set, made on first use unless an upgrade's
/// predecessor handed one over first ([`adopt`]).
pub fn process_keys() -> Option<Arc<TicketKeys>> {
    PROCESS
        .get_or_init(|| TicketKeys::generate().map(Arc::new))
        .clone()
}

/// Takes the predecessor's keys (upgrade handover); must run before the
/// first TLS config is built. False if the text does not parse or keys
/// were already made.
pub fn adopt(exported: &str) -> bool {
    match TicketKeys::import(exported) {
        Some(k) => PROCESS.set(Some(Arc::new(k))).is_ok(),
        None => false,
    }
}

/// What to hand an upgrade's successor, if this process made keys.
pub fn export_process_keys() -> Option<String> {
    PROCESS.get()?.as_ref()?.export()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let k = TicketKeys::generate().unwrap();
        let t = k.encrypt(b"session state").unwrap();
        assert_eq!(t.len(), 16 + 12 + 13 + 16);
        assert_eq!(k.decrypt(&t).unwrap(), b"session state");
        // Any flipped byte (name, nonce, body, tag) fails.
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 1;
            assert!(k.decrypt(&bad).is_none(), "byte {i}");
        }
        // Short or empty input: None, no panic.
        for n in 0..t.len() {
            let _ = k.decrypt(&t[..n]);
        }
        assert!(k.decrypt(&[]).is_none());
        // Another key set cannot read it.
        assert!(TicketKeys::generate().unwrap().decrypt(&t).is_none());
    }

    #[test]
    fn export_import_keeps_tickets_valid() {
        let k = TicketKeys::generate().unwrap();
        let t = k.encrypt(b"abc").unwrap();
        let text = k.export().unwrap();
        let k2 = TicketKeys::import(&text).unwrap();
        assert_eq!(k2.decrypt(&t).unwrap(), b"abc");
        assert!(TicketKeys::import("1:zz").is_none());
        assert!(TicketKeys::import(&format!("{text}:00:00")).is_none());
    }

    #[test]
    fn rotation_keeps_the_previous_key() {
        let k = TicketKeys::generate().unwrap();
        let t = k.encrypt(b"old").unwrap();
        k.state.write().unwrap().created = 0; // due
        let t2 = k.encrypt(b"new").unwrap();
        assert_ne!(t[..16], t2[..16], "a new key name after rotation");
        assert_eq!(k.decrypt(&t).unwrap(), b"old");
        k.state.write().unwrap().created = 0;
        let _ = k.encrypt(b"newer").unwrap();
        assert!(k.decrypt(&t).is_none(), "two rotations retire a key");
        assert_eq!(k.decrypt(&t2).unwrap(), b"new");
    }

    #[test]
    fn files_fixed_first_encrypts_all_decrypt() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, bad) = (d.path().join("a"), d.path().join("b"), d.path().join("bad"));
        std::fs::write(&a, [1u8; 80]).unwrap();
        std::fs::write(&b, [2u8; 48]).unwrap();
        std::fs::write(&bad, [3u8; 47]).unwrap();
        let ab = TicketKeys::from_files(&[&a, &b]).unwrap();
        let ba = TicketKeys::from_files(&[&b, &a]).unwrap();
        let t = ab.encrypt(b"x").unwrap();
        assert_eq!(ba.decrypt(&t).unwrap(), b"x", "a key that only decrypts");
        assert!(ab.export().is_none());
        let (i, msg) = TicketKeys::from_files(&[&a, &bad]).unwrap_err();
        assert_eq!(i, 1);
        assert!(msg.contains("47 bytes"), "{msg}");
        assert!(TicketKeys::from_files(&[d.path().join("missing")]).is_err());
    }
}
