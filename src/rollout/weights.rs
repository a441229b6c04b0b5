//! Replica-ratio traffic: the canary's share comes from replica counts behind one Service.
//!
//! Stable keeps its replicas (and its HPA); the canary gets the count that comes closest to the
//! requested share without starving either side: at least one replica, and the actual share is
//! reported next to the requested one (with few replicas it can be far off — 1 canary beside
//! 2 stable is 33%, whatever was asked).

/// How the canary's share of traffic is made, which decides how it is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Split {
    /// By replica counts behind one Service: the share is the canary's share of ready pods.
    #[default]
    Replicas,
    /// By weights on a route (Gateway API): the share is exact; the canary only needs the
    /// capacity for it.
    Weighted,
}

impl From<crate::api::TrafficMode> for Split {
    fn from(mode: crate::api::TrafficMode) -> Self {
        match mode {
            crate::api::TrafficMode::Replicas => Split::Replicas,
            crate::api::TrafficMode::GatewayApi => Split::Weighted,
        }
    }
}

impl Split {
    /// Canary replicas for `weight` percent beside `stable` replicas.
    pub fn canary_replicas(self, stable: i32, weight: i32) -> i32 {
        match self {
            Split::Replicas => canary_replicas(stable, weight),
            Split::Weighted => weighted_canary_replicas(stable, weight),
        }
    }

    /// The share the canary actually gets with `canary` replicas when `requested` was asked.
    pub fn actual_weight(self, stable: i32, canary: i32, requested: i32) -> i32 {
        match self {
            Split::Replicas => actual_weight(stable, canary),
            Split::Weighted if canary > 0 => requested.clamp(0, 100),
            Split::Weighted => 0,
        }
    }
}

/// Under weighted routing: capacity for `weight` percent of what `stable` replicas serve,
/// ⌈S·w/100⌉, at least 1 for a weight > 0.
pub fn weighted_canary_replicas(stable: i32, weight: i32) -> i32 {
    if weight <= 0 {
        return 0;
    }
    let s = i64::from(stable.max(1));
    let w = i64::from(weight.clamp(1, 100));
    ((s * w + 99) / 100).clamp(1, 1000) as i32
}

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
    fn weighted_routing_sizes_for_capacity_and_reports_the_exact_share() {
        assert_eq!(weighted_canary_replicas(10, 10), 1);
        assert_eq!(weighted_canary_replicas(10, 25), 3);
        assert_eq!(weighted_canary_replicas(10, 50), 5);
        assert_eq!(weighted_canary_replicas(3, 1), 1);
        assert_eq!(weighted_canary_replicas(4, 0), 0);
        assert_eq!(Split::Weighted.actual_weight(10, 1, 10), 10);
        assert_eq!(Split::Weighted.actual_weight(10, 0, 10), 0);
        assert_eq!(Split::Replicas.actual_weight(10, 1, 10), 9);
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
