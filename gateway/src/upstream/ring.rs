//! The consistent-hash ring: each endpoint owns [`POINTS_PER_WEIGHT`] × weight points,
//! placed by hashing its address, and a key belongs to the first point at or after its
//! hash. An endpoint's points depend on its address and weight only, so when an endpoint
//! leaves the ring (unhealthy, ejected, or removed from the config) only the keys it
//! owned move; every other key stays where it was.

use super::hash::Hasher64;

/// Ring points per unit of endpoint weight: enough that the endpoints' shares of the key
/// space stay within a few percent of their weights.
pub(crate) const POINTS_PER_WEIGHT: u32 = 160;

/// A ring over some endpoints.
#[derive(Debug)]
pub(crate) struct Ring {
    /// Point positions, sorted.
    positions: Box<[u64]>,
    /// The endpoint index owning each point.
    owners: Box<[u32]>,
}

impl Ring {
    /// A ring over `(endpoint index, address, weight)`.
    pub(crate) fn new<'a>(members: impl IntoIterator<Item = (u32, &'a str, u32)>) -> Ring {
        let mut points: Vec<(u64, u32)> = Vec::new();
        for (index, address, weight) in members {
            let base = Hasher64::new().write(address.as_bytes());
            for k in 0..weight * POINTS_PER_WEIGHT {
                points.push((base.write(b"#").write(&k.to_le_bytes()).finish(), index));
            }
        }
        // Ties (astronomically rare) break by index, so the order is deterministic.
        points.sort_unstable();
        let (positions, owners) = points.into_iter().unzip::<_, _, Vec<_>, Vec<_>>();
        Ring {
            positions: positions.into(),
            owners: owners.into(),
        }
    }

    /// The endpoint owning `key`, skipping endpoints `skip` says to (walking on round the
    /// ring); `None` for an empty ring, and the plain owner if `skip` refuses them all.
    pub(crate) fn lookup(&self, key: u64, skip: impl Fn(u32) -> bool) -> Option<u32> {
        let n = self.positions.len();
        if n == 0 {
            return None;
        }
        let start = self.positions.partition_point(|&p| p < key) % n;
        let owner = self.owners[start];
        if !skip(owner) {
            return Some(owner);
        }
        (1..n)
            .map(|step| self.owners[(start + step) % n])
            .find(|&o| !skip(o))
            .or(Some(owner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::hash::hash;

    fn owners(ring: &Ring, keys: u32) -> Vec<u32> {
        (0..keys)
            .map(|k| ring.lookup(hash(&k.to_le_bytes()), |_| false).unwrap())
            .collect()
    }

    const ADDRS: [&str; 4] = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"];

    #[test]
    fn shares_follow_weights() {
        let ring = Ring::new([(0, ADDRS[0], 1), (1, ADDRS[1], 1), (2, ADDRS[2], 2)]);
        let mut counts = [0u32; 3];
        for o in owners(&ring, 40_000) {
            counts[o as usize] += 1;
        }
        let share = |i: usize| f64::from(counts[i]) / 40_000.0;
        for (i, expected) in [(0, 0.25), (1, 0.25), (2, 0.5)] {
            assert!(
                (share(i) - expected).abs() < 0.05,
                "endpoint {i}: {:.3} of the keys, expected {expected} ({counts:?})",
                share(i)
            );
        }
    }

    /// Removing one of four endpoints moves only its own keys: the remapped share is
    /// the share it owned (about a quarter), and no other key changes endpoint.
    #[test]
    fn removing_an_endpoint_moves_only_its_keys() {
        let all = Ring::new(ADDRS.iter().enumerate().map(|(i, a)| (i as u32, *a, 1)));
        let without = Ring::new(
            ADDRS
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 2)
                .map(|(i, a)| (i as u32, *a, 1)),
        );
        let (before, after) = (owners(&all, 20_000), owners(&without, 20_000));
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let owned = before.iter().filter(|&&o| o == 2).count();
        assert!(
            before.iter().zip(&after).all(|(b, a)| b == a || *b == 2),
            "only keys of the removed endpoint move"
        );
        assert_eq!(moved, owned);
        let share = moved as f64 / 20_000.0;
        assert!(
            (0.20..0.30).contains(&share),
            "remapped share {share:.3}, ideal 0.25"
        );
        // Skipping the endpoint at lookup time (unhealthy, not removed) agrees.
        let skipped: Vec<u32> = (0..20_000u32)
            .map(|k| all.lookup(hash(&k.to_le_bytes()), |o| o == 2).unwrap())
            .collect();
        assert_eq!(skipped, after);
    }

    #[test]
    fn empty_ring_and_all_skipped() {
        assert_eq!(Ring::new([]).lookup(7, |_| false), None);
        let ring = Ring::new([(5, ADDRS[0], 1)]);
        assert_eq!(ring.lookup(7, |_| true), Some(5));
    }
}
