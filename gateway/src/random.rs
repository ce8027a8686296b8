//! Cheap random numbers for balancing, splits, mirror sampling and retry jitter: a
//! per-thread splitmix64
//! generator seeded once from the OS. Spread and speed matter here, not
//! unpredictability.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = Cell::new(rand::random::<u64>());
}

/// A uniform number below `n` (0 when `n` is 0).
pub(crate) fn below(n: usize) -> usize {
    let r = STATE.with(|state| {
        let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    });
    // Lemire's multiply-shift: r / 2^64 scaled to n, with no division.
    ((u128::from(r) * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    #[test]
    fn below_stays_below_and_spreads() {
        assert_eq!(super::below(0), 0);
        let mut counts = [0u32; 10];
        for _ in 0..10_000 {
            counts[super::below(10)] += 1;
        }
        assert!(
            counts.iter().all(|&n| (850..1150).contains(&n)),
            "{counts:?}"
        );
    }
}
