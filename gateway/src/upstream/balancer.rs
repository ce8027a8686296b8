//! Endpoint selection. A [`Picker`] is built whenever the set of endpoints in rotation
//! changes (health, ejections) and shared read-only by every worker; picking costs a few
//! atomics and some arithmetic, never a lock or an allocation.
//!
//! - `round_robin`: smooth weighted round robin (nginx's): each endpoint appears in a
//!   precomputed schedule as often as its weight, interleaved (weights 5, 1, 1 give
//!   `a a b a c a a`), and one shared counter walks the schedule.
//! - `random`: a uniform draw from that schedule, which is a draw by weight.
//! - `least_request`: two endpoints drawn by weight; the one with fewer requests in
//!   flight per unit of weight wins (the power of two choices).
//! - `consistent_hash`: the ring (see [`super::ring`]) over every endpoint; a key whose
//!   endpoint is out of rotation walks on to the next one in rotation, so no other key
//!   moves. A request without the key is placed at random, as Envoy does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::ring::Ring;
use crate::config::Balancer;
use crate::random::below;

/// Endpoints a retry would rather not go back to: a set of endpoint indices (modulo 64;
/// in larger clusters an avoided endpoint may shadow another, which only weakens a
/// preference).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Avoid(u64);

impl Avoid {
    /// Adds endpoint `index`.
    pub(crate) fn add(&mut self, index: usize) {
        self.0 |= 1 << (index % 64);
    }

    /// Whether endpoint `index` is to be avoided.
    pub(crate) fn has(self, index: usize) -> bool {
        self.0 & (1 << (index % 64)) != 0
    }
}

/// How a request picks among the endpoints in rotation.
#[derive(Debug)]
pub(crate) struct Picker {
    policy: Balancer,
    /// Endpoint indices in smooth weighted round-robin order over the endpoints in
    /// rotation, each as often as its weight (divided by the weights' common divisor).
    schedule: Box<[u32]>,
    /// Every endpoint's weight, by index.
    weights: Box<[u32]>,
    /// Whether each endpoint is in rotation, by index.
    in_rotation: Box<[bool]>,
    /// The ring over every endpoint (`consistent_hash` only).
    ring: Option<Arc<Ring>>,
}

impl Picker {
    /// A picker over the endpoints whose `in_rotation` flag is set; with none set, over
    /// all of them (a cluster always has somewhere to send a request).
    pub(crate) fn new(
        policy: Balancer,
        weights: &[u32],
        mut in_rotation: Vec<bool>,
        ring: Option<Arc<Ring>>,
    ) -> Picker {
        if !in_rotation.contains(&true) {
            in_rotation.iter_mut().for_each(|r| *r = true);
        }
        let members: Vec<(u32, u32)> = (0..weights.len())
            .filter(|&i| in_rotation[i])
            .map(|i| (i as u32, weights[i].max(1)))
            .collect();
        Picker {
            policy,
            schedule: smooth_schedule(&members).into(),
            weights: weights.into(),
            in_rotation: in_rotation.into(),
            ring,
        }
    }

    /// Whether endpoint `index` is in rotation.
    pub(crate) fn in_rotation(&self, index: usize) -> bool {
        self.in_rotation.get(index).copied().unwrap_or(false)
    }

    /// The endpoint for a request: `rr` is the cluster's round-robin counter, `key` the
    /// request's hash (for `consistent_hash`), `avoid` endpoints already tried, and
    /// `in_flight` an endpoint's requests in flight (for `least_request`). `None` only
    /// for a cluster without endpoints.
    pub(crate) fn pick(
        &self,
        rr: &AtomicUsize,
        key: Option<u64>,
        avoid: Avoid,
        in_flight: impl Fn(usize) -> usize,
    ) -> Option<usize> {
        if self.schedule.is_empty() {
            return None;
        }
        Some(match self.policy {
            Balancer::RoundRobin => self.next_in_turn(rr, avoid),
            Balancer::Random => self.draw(avoid),
            Balancer::LeastRequest => self.less_loaded(avoid, in_flight),
            Balancer::ConsistentHash => match (key, &self.ring) {
                (Some(key), Some(ring)) => ring
                    .lookup(key, |o| {
                        !self.in_rotation(o as usize) || avoid.has(o as usize)
                    })
                    .filter(|&o| self.in_rotation(o as usize))
                    .or_else(|| ring.lookup(key, |o| !self.in_rotation(o as usize)))
                    .map_or_else(|| self.draw(avoid), |o| o as usize),
                _ => self.draw(avoid),
            },
        })
    }

    fn next_in_turn(&self, rr: &AtomicUsize, avoid: Avoid) -> usize {
        let len = self.schedule.len();
        let start = rr.fetch_add(1, Ordering::Relaxed);
        let first = self.schedule[start % len] as usize;
        if !avoid.has(first) {
            return first;
        }
        (1..len)
            .map(|step| self.schedule[(start + step) % len] as usize)
            .find(|&e| !avoid.has(e))
            .unwrap_or(first)
    }

    /// An endpoint in rotation drawn by weight, preferring one not in `avoid`.
    fn draw(&self, avoid: Avoid) -> usize {
        let mut drawn = self.schedule[below(self.schedule.len())] as usize;
        for _ in 0..4 {
            if !avoid.has(drawn) {
                return drawn;
            }
            drawn = self.schedule[below(self.schedule.len())] as usize;
        }
        self.schedule
            .iter()
            .map(|&e| e as usize)
            .find(|&e| !avoid.has(e))
            .unwrap_or(drawn)
    }

    fn less_loaded(&self, avoid: Avoid, in_flight: impl Fn(usize) -> usize) -> usize {
        let a = self.draw(avoid);
        let mut b = a;
        for _ in 0..4 {
            b = self.draw(avoid);
            if b != a {
                break;
            }
        }
        // Fewer in flight per unit of weight: in_flight(b) / w(b) < in_flight(a) / w(a).
        let load = |e: usize, other: usize| in_flight(e) as u64 * u64::from(self.weights[other]);
        if load(b, a) < load(a, b) { b } else { a }
    }
}

/// The smooth weighted round-robin order of `(index, weight)` members: every step adds
/// each member's weight to its credit, picks the member with the most credit (the first
/// on ties) and takes the total weight off it. Weights are first divided by their
/// greatest common divisor, so the schedule is as short as it can be.
fn smooth_schedule(members: &[(u32, u32)]) -> Vec<u32> {
    let divisor = members.iter().fold(0, |g, &(_, w)| gcd(g, w)).max(1);
    let weights: Vec<i64> = members
        .iter()
        .map(|&(_, w)| i64::from(w / divisor))
        .collect();
    let total: i64 = weights.iter().sum();
    let mut credit = vec![0i64; members.len()];
    let mut schedule = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            credit[i] += w;
            if credit[i] > credit[best] {
                best = i;
            }
        }
        credit[best] -= total;
        schedule.push(members[best].0);
    }
    schedule
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picker(policy: Balancer, weights: &[u32], in_rotation: &[bool]) -> Picker {
        Picker::new(policy, weights, in_rotation.to_vec(), None)
    }

    fn counts(p: &Picker, n: usize, endpoints: usize) -> Vec<usize> {
        let rr = AtomicUsize::new(0);
        let mut counts = vec![0; endpoints];
        for _ in 0..n {
            counts[p.pick(&rr, None, Avoid::default(), |_| 0).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn smooth_round_robin_interleaves_by_weight() {
        let schedule = smooth_schedule(&[(0, 5), (1, 1), (2, 1)]);
        assert_eq!(schedule, [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(
            smooth_schedule(&[(0, 2), (1, 4)]),
            [1, 0, 1],
            "divided by the gcd"
        );
        let p = picker(Balancer::RoundRobin, &[1, 3], &[true, true]);
        assert_eq!(counts(&p, 4000, 2), [1000, 3000], "exact over whole rounds");
    }

    #[test]
    fn endpoints_out_of_rotation_get_nothing_unless_all_are_out() {
        let p = picker(Balancer::RoundRobin, &[1, 1, 1], &[true, false, true]);
        assert_eq!(counts(&p, 100, 3), [50, 0, 50]);
        let panic = picker(Balancer::RoundRobin, &[1, 1, 1], &[false, false, false]);
        assert_eq!(
            counts(&panic, 99, 3),
            [33, 33, 33],
            "none in rotation: all are"
        );
        let random = picker(Balancer::Random, &[1, 1, 1], &[false, true, true]);
        assert_eq!(counts(&random, 1000, 3)[0], 0);
    }

    #[test]
    fn random_draws_by_weight() {
        let p = picker(Balancer::Random, &[1, 2, 7], &[true; 3]);
        let c = counts(&p, 20_000, 3);
        for (i, share) in [0.1, 0.2, 0.7].into_iter().enumerate() {
            let got = c[i] as f64 / 20_000.0;
            assert!(
                (got - share).abs() < 0.02,
                "endpoint {i}: {got:.3} vs {share} ({c:?})"
            );
        }
    }

    /// With equal weights, the power of two choices sends a request to the less loaded
    /// of two distinct endpoints, so the most loaded one is (almost) never chosen, while
    /// the others share the traffic evenly.
    #[test]
    fn least_request_prefers_fewer_in_flight() {
        let p = picker(Balancer::LeastRequest, &[1, 1, 1, 1], &[true; 4]);
        let rr = AtomicUsize::new(0);
        let load = [10, 0, 0, 0];
        let mut picked = [0usize; 4];
        for _ in 0..8000 {
            picked[p.pick(&rr, None, Avoid::default(), |e| load[e]).unwrap()] += 1;
        }
        // Chosen only when every redraw of the second candidate hit it again: (1/4)^5.
        assert!(picked[0] < 40, "busy endpoint picked {picked:?}");
        assert!(
            picked[1..].iter().all(|&n| (2400..2900).contains(&n)),
            "{picked:?}"
        );

        // Simulated: each pick adds a request that stays in flight; the counts stay level.
        let mut in_flight = [0usize; 4];
        for _ in 0..4000 {
            let e = p
                .pick(&rr, None, Avoid::default(), |e| in_flight[e])
                .unwrap();
            in_flight[e] += 1;
        }
        let (min, max) = (
            in_flight.iter().min().unwrap(),
            in_flight.iter().max().unwrap(),
        );
        assert!(max - min <= 20, "uneven load {in_flight:?}");
    }

    /// Weight-aware: with weights 1 and 3 and requests that stay in flight, the heavier
    /// endpoint ends up carrying three times the load.
    #[test]
    fn least_request_is_weight_aware() {
        let p = picker(Balancer::LeastRequest, &[1, 3], &[true, true]);
        let rr = AtomicUsize::new(0);
        let mut in_flight = [0usize; 2];
        for _ in 0..4000 {
            let e = p
                .pick(&rr, None, Avoid::default(), |e| in_flight[e])
                .unwrap();
            in_flight[e] += 1;
        }
        let ratio = in_flight[1] as f64 / in_flight[0] as f64;
        assert!((2.7..3.3).contains(&ratio), "{in_flight:?}");
    }

    #[test]
    fn a_retry_avoids_the_endpoints_it_tried() {
        let rr = AtomicUsize::new(0);
        let mut avoid = Avoid::default();
        avoid.add(1);
        for policy in [
            Balancer::RoundRobin,
            Balancer::Random,
            Balancer::LeastRequest,
        ] {
            let p = picker(policy, &[1, 1, 1], &[true; 3]);
            for _ in 0..300 {
                assert_ne!(p.pick(&rr, None, avoid, |_| 0), Some(1), "{policy:?}");
            }
        }
        // A lone endpoint is still picked when it is the only one.
        let p = picker(Balancer::RoundRobin, &[1, 1], &[false, true]);
        assert_eq!(p.pick(&rr, None, avoid, |_| 0), Some(1));
    }

    #[test]
    fn consistent_hash_keeps_keys_and_walks_past_endpoints_out_of_rotation() {
        let addrs = ["a:1", "b:1", "c:1"];
        let ring = Arc::new(Ring::new(
            addrs.iter().enumerate().map(|(i, a)| (i as u32, *a, 1)),
        ));
        let all = Picker::new(
            Balancer::ConsistentHash,
            &[1; 3],
            vec![true; 3],
            Some(ring.clone()),
        );
        let two = Picker::new(
            Balancer::ConsistentHash,
            &[1; 3],
            vec![true, false, true],
            Some(ring),
        );
        let rr = AtomicUsize::new(0);
        let mut moved = 0;
        for k in 0..3000u64 {
            let key = crate::upstream::hash::hash(&k.to_le_bytes());
            let before = all.pick(&rr, Some(key), Avoid::default(), |_| 0).unwrap();
            assert_eq!(
                all.pick(&rr, Some(key), Avoid::default(), |_| 0),
                Some(before)
            );
            let after = two.pick(&rr, Some(key), Avoid::default(), |_| 0).unwrap();
            assert_ne!(after, 1);
            if before != 1 {
                assert_eq!(after, before, "key {k} moved although its endpoint stayed");
            } else {
                moved += 1;
            }
            // A retry of the key goes to another endpoint.
            let mut avoid = Avoid::default();
            avoid.add(before);
            assert_ne!(all.pick(&rr, Some(key), avoid, |_| 0), Some(before));
        }
        assert!(
            (800..1200).contains(&moved),
            "{moved} of 3000 keys were on endpoint 1"
        );
    }
}
