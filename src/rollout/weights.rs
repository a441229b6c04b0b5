//! Replica-ratio traffic: the canary's share comes from replica counts behind one Service.
//!
//! Stable keeps its replicas (and its HPA); the canary gets the count that comes closest to the
//! requested share without starving either side: at least one replica, and the actual share is
//! reported next to the requested one (with few replicas it can be far off — 1 canary beside
//! 2 stable is 33%, whatever was asked).

/// Canary replicas for `weight` percent beside `stable` replicas (at least 1 for a weight > 0).
pub fn canary_replicas(stable: i32, weight: i32) -> i32 {
    if weight <= 0 {
        return 0;
    }
    let stable = stable.max(1) as f64;
    let w = f64::from(weight.clamp(1, 99)) / 100.0;
    // c / (stable + c) = w  ⇒  c = stable · w / (1 − w); pick the closer of floor and ceil.
    let exact = stable * w / (1.0 - w);
    let (lo, hi) = (exact.floor().max(1.0), exact.ceil().max(1.0));
    let share = |c: f64| c / (stable + c);
    let best = if (share(lo) - w).abs() <= (share(hi) - w).abs() {
        lo
    } else {
        hi
    };
    best.min(1000.0) as i32
}

/// The share (percent, rounded) `canary` replicas get beside `stable` ones.
pub fn actual_weight(stable: i32, canary: i32) -> i32 {
    let (s, c) = (stable.max(0), canary.max(0));
    if s + c == 0 {
        return 0;
    }
    ((f64::from(c) * 100.0 / f64::from(s + c)).round()) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_split_without_starving_either_side() {
        assert_eq!(canary_replicas(10, 10), 1);
        assert_eq!(actual_weight(10, 1), 9);
        assert_eq!(canary_replicas(10, 25), 3);
        assert_eq!(actual_weight(10, 3), 23);
        assert_eq!(canary_replicas(10, 50), 10);
        assert_eq!(
            canary_replicas(2, 10),
            1,
            "never zero replicas for a weight"
        );
        assert_eq!(actual_weight(2, 1), 33);
        assert_eq!(canary_replicas(0, 10), 1);
        assert_eq!(canary_replicas(5, 0), 0);
        assert_eq!(canary_replicas(1, 99), 99);
    }

    #[test]
    fn the_split_is_the_closest_one() {
        for stable in 1..40 {
            for weight in 1..=90 {
                let c = canary_replicas(stable, weight);
                let err = |c: i32| {
                    (f64::from(c) / f64::from(stable + c) - f64::from(weight) / 100.0).abs()
                };
                for other in 1..(c + 3) {
                    assert!(
                        err(c) <= err(other) + 1e-12,
                        "stable {stable} weight {weight}: {c} vs {other}"
                    );
                }
            }
        }
    }
}
