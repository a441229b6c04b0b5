//! `drover simulate --plot out.svg`: canary weight, error rate and p99 over time, each judged
//! signal against its threshold (plotters, SVG backend).

use std::path::Path;

use plotters::prelude::*;

use super::Simulation;

/// One chart: title, unit, threshold, and how to read the value off a row.
type Panel = (
    &'static str,
    &'static str,
    f64,
    Box<dyn Fn(&super::Row) -> Option<f64>>,
);

/// Draws the simulation into an SVG file.
pub fn draw(sim: &Simulation, path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (1000, 780)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let panels = root.split_evenly((3, 1));
    let end = sim
        .rows
        .last()
        .map(|r| r.t as f64 / 60.0)
        .unwrap_or(1.0)
        .max(1.0);
    let minutes = |t: u64| t as f64 / 60.0;

    let series: [Panel; 3] = [
        (
            "canary weight",
            "%",
            100.0,
            Box::new(|r| Some(f64::from(r.actual_weight))),
        ),
        (
            "canary error rate",
            "%",
            sim.max_error_rate * 100.0,
            Box::new(|r| r.error_rate.map(|e| e * 100.0)),
        ),
        (
            "canary p99 latency",
            "ms",
            sim.max_latency_p99 * 1000.0,
            Box::new(|r| r.p99.map(|p| p * 1000.0)),
        ),
    ];
    for (panel, (title, unit, threshold, value)) in panels.iter().zip(series.iter()) {
        let top = sim
            .rows
            .iter()
            .filter_map(value)
            .fold(*threshold, f64::max)
            .max(1e-9)
            * 1.15;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{title} ({unit})"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..end, 0f64..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("minutes")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                sim.rows
                    .iter()
                    .filter_map(|r| value(r).map(|v| (minutes(r.t), v))),
                &BLUE,
            ))
            .map_err(|e| e.to_string())?
            .label(*title);
        if *title != "canary weight" {
            chart
                .draw_series(LineSeries::new(
                    vec![(0.0, *threshold), (end, *threshold)],
                    &RED,
                ))
                .map_err(|e| e.to_string())?
                .label("threshold");
        }
    }
    root.present().map_err(|e| e.to_string())
}
