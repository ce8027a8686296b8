//! Weighted traffic splitting: a route whose `split` lists several upstreams sends each
//! request to one of them, drawn by weight with one cheap random number (a per-thread
//! generator: no lock, no allocation). A route with a plain `upstream` pays one branch,
//! and one with `respond` goes nowhere.

use crate::config::{DirectResponse, RouteUpstream, SplitTarget};

/// Where a route's requests go.
#[derive(Debug)]
pub enum Target {
    /// Always this upstream cluster (its index in the snapshot).
    Single(usize),
    /// One of several, drawn by weight per request.
    Split(Split),
    /// Nowhere: the route answers itself.
    Respond(DirectResponse),
}

/// Where one request goes.
#[derive(Debug, Clone, Copy)]
pub enum Destination<'a> {
    /// To this upstream cluster (its index in the snapshot).
    Cluster(usize),
    /// Nowhere: it gets this answer.
    Respond(&'a DirectResponse),
}

impl Target {
    /// Compiles a validated [`RouteUpstream`].
    pub fn new(upstream: &RouteUpstream) -> Target {
        match upstream {
            RouteUpstream::Single(index) => Target::Single(*index),
            RouteUpstream::Split(targets) => Target::Split(Split::new(targets)),
            RouteUpstream::Respond(direct) => Target::Respond(direct.clone()),
        }
    }

    /// Where one request goes.
    #[inline]
    pub fn pick(&self) -> Destination<'_> {
        match self {
            Target::Single(index) => Destination::Cluster(*index),
            Target::Split(split) => Destination::Cluster(split.pick()),
            Target::Respond(direct) => Destination::Respond(direct),
        }
    }
}

/// A weighted choice among upstream clusters.
#[derive(Debug)]
pub struct Split {
    /// `(running total of the weights up to and including this entry, cluster)`.
    cumulative: Box<[(u64, usize)]>,
    /// The sum of the weights.
    total: u64,
}

impl Split {
    /// A split over `targets` (validated: non-empty, weights at least 1).
    pub fn new(targets: &[SplitTarget]) -> Split {
        let mut total = 0u64;
        let cumulative = targets
            .iter()
            .map(|t| {
                total += u64::from(t.weight);
                (total, t.upstream)
            })
            .collect();
        Split { cumulative, total }
    }

    /// One upstream, drawn by weight: entry `i` is chosen with probability
    /// `weight[i] / total`.
    pub fn pick(&self) -> usize {
        let draw = crate::random::below(self.total as usize) as u64;
        self.choose(draw)
    }

    /// The entry a draw in `0..total` lands on.
    fn choose(&self, draw: u64) -> usize {
        // Few entries: a linear scan beats a binary search.
        self.cumulative
            .iter()
            .find(|(upto, _)| draw < *upto)
            .or(self.cumulative.last())
            .map_or(usize::MAX, |(_, cluster)| *cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(weights: &[(usize, u32)]) -> Split {
        let targets: Vec<SplitTarget> = weights
            .iter()
            .map(|&(upstream, weight)| SplitTarget { upstream, weight })
            .collect();
        Split::new(&targets)
    }

    #[test]
    fn draws_land_on_entries_in_proportion_to_their_weights() {
        let s = split(&[(7, 1), (3, 3)]);
        assert_eq!(s.choose(0), 7);
        assert_eq!(s.choose(1), 3);
        assert_eq!(s.choose(3), 3);
        let mut counts = [0u32; 8];
        for _ in 0..40_000 {
            counts[s.pick()] += 1;
        }
        // Expect 10,000 and 30,000; sd ≈ 87: ±1,000 is over 10 standard deviations.
        assert!((9_000..11_000).contains(&counts[7]), "{counts:?}");
        assert_eq!(counts[7] + counts[3], 40_000);
    }

    #[test]
    fn a_single_entry_always_wins() {
        let s = split(&[(2, 5)]);
        assert!((0..100).all(|_| s.pick() == 2));
    }
}
