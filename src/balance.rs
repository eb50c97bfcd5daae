//! Backend choice: round_robin, least_conn, ip_hash. Pure: the caller passes the
//! facts (availability, active counts, hash seeds) as closures over its own state.

use std::net::IpAddr;

use crate::config::Balance;

/// Chooses a backend index among `n`, or `None` when every untried backend is
/// unavailable.
///
/// - `cursor`: a per-worker counter; round_robin starts there, least_conn breaks ties there.
/// - `client`: [`client_hash`] of the client address (ip_hash).
/// - `tried`: indices already attempted for this connection.
/// - `ok(i)`: whether backend `i` may take a new connection now.
/// - `active(i)`: its open connections across all workers (least_conn).
/// - `seed(i)`: a stable hash of its identity (ip_hash).
#[allow(clippy::too_many_arguments)]
pub fn pick(
    policy: Balance,
    n: usize,
    cursor: u64,
    client: u64,
    tried: &[usize],
    ok: impl Fn(usize) -> bool,
    active: impl Fn(usize) -> u32,
    seed: impl Fn(usize) -> u64,
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let start = (cursor % n as u64) as usize;
    let usable = |i: usize| !tried.contains(&i) && ok(i);
    match policy {
        Balance::RoundRobin => (0..n).map(|k| (start + k) % n).find(|&i| usable(i)),
        Balance::LeastConn => (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| usable(i))
            .min_by_key(|&i| active(i)),
        // Rendezvous (highest random weight) hashing: every backend gets a score
        // for this client; the best available one wins. Removing or adding one
        // backend only moves the clients whose best score it had or gets: ~1/n.
        Balance::IpHash => (0..n)
            .filter(|&i| usable(i))
            .max_by_key(|&i| mix(client ^ mix(seed(i)))),
    }
}

/// [`pick`] for routes whose backends differ in `weight` or SRV priority
/// (the caller checks once per snapshot; equal weights take [`pick`]).
///
/// Only the lowest priority tier with a usable backend is considered (RFC
/// 2782); within it round_robin gives each backend `weight` turns out of
/// every sum-of-weights picks, least_conn compares open connections divided
/// by weight, ip_hash ignores weights (rendezvous hashing keeps clients put).
#[allow(clippy::too_many_arguments)]
pub fn pick_weighted(
    policy: Balance,
    n: usize,
    cursor: u64,
    client: u64,
    tried: &[usize],
    ok: impl Fn(usize) -> bool,
    active: impl Fn(usize) -> u32,
    seed: impl Fn(usize) -> u64,
    weight: impl Fn(usize) -> u32,
    priority: impl Fn(usize) -> u16,
) -> Option<usize> {
    let usable = |i: usize| !tried.contains(&i) && ok(i);
    let tier = (0..n).filter(|&i| usable(i)).map(&priority).min()?;
    let cand = |i: &usize| usable(*i) && priority(*i) == tier;
    let w = |i: usize| u64::from(weight(i).max(1));
    match policy {
        Balance::RoundRobin => {
            let total: u64 = (0..n).filter(cand).map(w).sum();
            let mut pos = cursor % total.max(1);
            for i in (0..n).filter(cand) {
                if pos < w(i) {
                    return Some(i);
                }
                pos -= w(i);
            }
            None
        }
        Balance::LeastConn => {
            let start = (cursor % n as u64) as usize;
            (0..n)
                .map(|k| (start + k) % n)
                .filter(cand)
                .min_by_key(|&i| (u64::from(active(i)) << 20) / w(i))
        }
        Balance::IpHash => (0..n)
            .filter(cand)
            .max_by_key(|&i| mix(client ^ mix(seed(i)))),
    }
}

/// A stable 64-bit hash of a client address (the port is ignored).
pub fn client_hash(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => mix(u32::from(v4) as u64 | 4 << 32),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => mix(u32::from(v4) as u64 | 4 << 32),
            None => {
                let x = u128::from(v6);
                mix((x as u64) ^ mix((x >> 64) as u64))
            }
        },
    }
}

/// A stable 64-bit hash of a string (FNV-1a, then mixed).
pub fn str_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finalizer: a cheap bijective mixer with good avalanche.
#[inline]
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn seeds(n: usize) -> Vec<u64> {
        (0..n).map(|i| str_hash(&format!("backend-{i}"))).collect()
    }

    #[test]
    fn round_robin_cycles_and_skips_unavailable() {
        let picks: Vec<_> = (0..6)
            .map(|c| pick(Balance::RoundRobin, 3, c, 0, &[], |_| true, |_| 0, |_| 0).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let p = pick(Balance::RoundRobin, 3, 1, 0, &[], |i| i != 1, |_| 0, |_| 0);
        assert_eq!(p, Some(2));
        let p = pick(Balance::RoundRobin, 3, 1, 0, &[2], |i| i != 1, |_| 0, |_| 0);
        assert_eq!(p, Some(0));
        assert_eq!(
            pick(Balance::RoundRobin, 3, 0, 0, &[], |_| false, |_| 0, |_| 0),
            None
        );
        assert_eq!(
            pick(Balance::RoundRobin, 0, 0, 0, &[], |_| true, |_| 0, |_| 0),
            None
        );
    }

    #[test]
    fn least_conn_prefers_idle_and_rotates_ties() {
        let active = [5u32, 0, 3];
        let p = pick(
            Balance::LeastConn,
            3,
            0,
            0,
            &[],
            |_| true,
            |i| active[i],
            |_| 0,
        );
        assert_eq!(p, Some(1));
        let p = pick(
            Balance::LeastConn,
            3,
            0,
            0,
            &[1],
            |_| true,
            |i| active[i],
            |_| 0,
        );
        assert_eq!(p, Some(2));
        let ties: Vec<_> = (0..3)
            .map(|c| pick(Balance::LeastConn, 3, c, 0, &[], |_| true, |_| 0, |_| 0).unwrap())
            .collect();
        assert_eq!(ties, [0, 1, 2]);
    }

    #[test]
    fn ip_hash_is_sticky_and_moves_about_one_in_n() {
        let s3 = seeds(3);
        let s4 = seeds(4);
        let mut moved = 0;
        let mut counts = [0usize; 3];
        let clients = 20_000u32;
        for c in 0..clients {
            let h = client_hash(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + c)));
            let a = pick(
                Balance::IpHash,
                3,
                c as u64,
                h,
                &[],
                |_| true,
                |_| 0,
                |i| s3[i],
            )
            .unwrap();
            let again = pick(Balance::IpHash, 3, 99, h, &[], |_| true, |_| 0, |i| s3[i]).unwrap();
            assert_eq!(a, again, "same client, same backend");
            counts[a] += 1;
            let b = pick(Balance::IpHash, 4, 0, h, &[], |_| true, |_| 0, |i| s4[i]).unwrap();
            if a != b {
                assert_eq!(b, 3, "only moves to the new backend");
                moved += 1;
            }
        }
        let frac = moved as f64 / clients as f64;
        assert!((0.20..0.30).contains(&frac), "moved {frac}");
        for c in counts {
            let share = c as f64 / clients as f64;
            assert!((0.30..0.37).contains(&share), "share {share}");
        }
    }

    #[test]
    fn weighted_round_robin_and_least_conn_and_priority_tiers() {
        let weight = [3u32, 1, 1];
        let mut counts = [0usize; 3];
        for c in 0..50 {
            let i = pick_weighted(
                Balance::RoundRobin,
                3,
                c,
                0,
                &[],
                |_| true,
                |_| 0,
                |_| 0,
                |i| weight[i],
                |_| 0,
            )
            .unwrap();
            counts[i] += 1;
        }
        assert_eq!(counts, [30, 10, 10]);
        // least_conn: 6 open on a weight-3 backend weighs like 2 on weight 1.
        let active = [5u32, 2, 3];
        let p = pick_weighted(
            Balance::LeastConn,
            3,
            0,
            0,
            &[],
            |_| true,
            |i| active[i],
            |_| 0,
            |i| weight[i],
            |_| 0,
        );
        assert_eq!(p, Some(0));
        // Priority 1 only while one of it is usable; then priority 2.
        let prio = [2u16, 1, 1];
        for c in 0..6 {
            let p = pick_weighted(
                Balance::RoundRobin,
                3,
                c,
                0,
                &[],
                |_| true,
                |_| 0,
                |_| 0,
                |i| weight[i],
                |i| prio[i],
            );
            assert!(matches!(p, Some(1 | 2)), "{p:?}");
        }
        let p = pick_weighted(
            Balance::RoundRobin,
            3,
            0,
            0,
            &[1],
            |i| i != 2,
            |_| 0,
            |_| 0,
            |i| weight[i],
            |i| prio[i],
        );
        assert_eq!(p, Some(0));
        assert_eq!(
            pick_weighted(
                Balance::IpHash,
                3,
                0,
                0,
                &[],
                |_| false,
                |_| 0,
                |_| 0,
                |_| 1,
                |_| 0
            ),
            None
        );
    }

    #[test]
    fn ip_hash_falls_over_to_next_best_when_down() {
        let s = seeds(3);
        let h = client_hash("192.0.2.7".parse().unwrap());
        let best = pick(Balance::IpHash, 3, 0, h, &[], |_| true, |_| 0, |i| s[i]).unwrap();
        let next = pick(
            Balance::IpHash,
            3,
            0,
            h,
            &[],
            |i| i != best,
            |_| 0,
            |i| s[i],
        )
        .unwrap();
        assert_ne!(best, next);
        let v6 = client_hash("::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(h, v6, "v4-mapped v6 hashes as v4");
    }
}
