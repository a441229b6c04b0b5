//! The shipped scenarios through `drover simulate`'s engine: the verdict, when it came, and why.

use drover::api::ModelDeployment;
use drover::simulate::{self, Simulation, scenario::Scenario};

fn run(name: &str) -> Simulation {
    let md: ModelDeployment =
        serde_saphyr::from_str(&std::fs::read_to_string("examples/full.yaml").unwrap()).unwrap();
    let text = std::fs::read_to_string(format!("examples/scenarios/{name}.yaml")).unwrap();
    simulate::simulate(&md, &Scenario::from_yaml(&text).unwrap()).unwrap()
}

fn first_event(sim: &Simulation, reason: &str) -> Option<u64> {
    sim.rows
        .iter()
        .find(|r| r.events.iter().any(|e| e.starts_with(reason)))
        .map(|r| r.t)
}

#[test]
fn healthy_promotion() {
    let sim = run("healthy-promotion");
    assert_eq!(sim.final_phase, "Complete");
    let promoted = first_event(&sim, "CanaryPromoted").expect("promoted");
    let baked = first_event(&sim, "BakeComplete").expect("baked");
    assert_eq!(baked - promoted, 600, "bakeTime 10m");
    assert!(first_event(&sim, "CanaryCheckFailed").is_none());
    // Every step ran at least its interval.
    let passes: Vec<u64> = sim
        .rows
        .iter()
        .filter(|r| {
            r.events
                .iter()
                .any(|e| e.starts_with("CanaryStepPassed") || e.starts_with("CanaryPromoted"))
        })
        .map(|r| r.t)
        .collect();
    assert_eq!(passes.len(), 3);
    assert!(passes.windows(2).all(|w| w[1] - w[0] >= 60));
}

#[test]
fn latency_regression_rolls_back_within_minutes() {
    let sim = run("latency-regression");
    assert_eq!(sim.final_phase, "RolledBack");
    let at = first_event(&sim, "CanaryRolledBack").expect("rolled back");
    assert!(at <= 300, "rolled back at {at}s");
    assert!(
        sim.final_reason.contains("latencyP99"),
        "{}",
        sim.final_reason
    );
}

#[test]
fn error_spike_fails_at_the_scrapes_that_show_it() {
    let sim = run("error-spike");
    assert_eq!(sim.final_phase, "RolledBack");
    let first_fail = first_event(&sim, "CanaryCheckFailed").expect("a failed check");
    assert!(first_fail > 180, "healthy before the spike: {first_fail}");
    let rolled = first_event(&sim, "CanaryRolledBack").unwrap();
    assert!(
        rolled - first_fail <= 120,
        "second failed check soon after the first"
    );
    assert!(sim.final_reason.contains("errorRate"));
}

#[test]
fn prediction_drift_on_the_canary_rolls_back() {
    let sim = run("prediction-drift");
    assert_eq!(sim.final_phase, "RolledBack");
    assert!(
        sim.final_reason.contains("predictionDrift"),
        "{}",
        sim.final_reason
    );
}

#[test]
fn no_traffic_is_inconclusive_until_the_deadline() {
    let sim = run("no-traffic");
    assert_eq!(sim.final_phase, "RolledBack");
    assert!(
        first_event(&sim, "CanaryCheckFailed").is_none(),
        "never a failure"
    );
    let at = first_event(&sim, "ProgressDeadlineExceeded").expect("deadline");
    assert_eq!(at, 1810, "30m after the start at 10s");
    assert!(sim.final_reason.contains("progressDeadline"));
}

#[test]
fn metrics_outage_freezes_then_continues() {
    let sim = run("metrics-outage");
    assert_eq!(sim.final_phase, "Complete");
    assert!(first_event(&sim, "CanaryCheckFailed").is_none());
    let frozen: Vec<&str> = sim
        .rows
        .iter()
        .filter(|r| r.t > 100 && r.t < 690)
        .map(|r| r.phase.as_str())
        .collect();
    assert!(frozen.iter().all(|p| *p == "Progressing"));
    assert!(
        sim.rows
            .iter()
            .filter(|r| r.t > 100 && r.t < 690)
            .all(|r| r.step == 0),
        "frozen on step 0"
    );
}

#[test]
fn regression_after_promotion_is_caught_in_the_bake_window() {
    let sim = run("regression-after-promotion");
    assert_eq!(sim.final_phase, "RolledBack");
    let promoted = first_event(&sim, "CanaryPromoted").expect("promoted first");
    let rolled = first_event(&sim, "BakeRolledBack").expect("bake rollback");
    assert!(rolled > promoted && rolled - promoted <= 600);
    assert!(sim.final_stable.contains("previous"));
}

#[test]
fn the_plot_is_an_svg() {
    let sim = run("error-spike");
    let path = std::env::temp_dir().join(format!("drover-plot-{}.svg", std::process::id()));
    simulate::plot::draw(&sim, &path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        svg.starts_with("<svg") && svg.contains("canary error rate") && svg.contains("polyline")
    );
}
