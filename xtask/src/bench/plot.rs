//! The end-to-end plots. [`write`]: server CPU per flood SYN and legitimate connect p99 against the
//! offered flood rate, one line per scenario. SVG only (plotters' SVG backend writes text as
//! `<text>` elements, so no font library is needed).

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;

use super::e2e::{Run, Scenario};

const COLORS: [RGBColor; 5] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// A figure of a run, if it has one.
type Value = fn(&Run) -> Option<f64>;

/// One panel: `value` of every run that has one against its offered rate (Mpps), log scale.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    runs: &[Run],
    caption: &str,
    y_label: &str,
    value: Value,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e| anyhow!("drawing the plot: {e:?}");
    let points = |s: Scenario| -> Vec<(f64, f64)> {
        runs.iter()
            .filter(|r| r.scenario == s)
            .filter_map(|r| Some((r.offered_pps / 1e6, value(r)?.max(1e-3))))
            .collect()
    };
    let ys = runs.iter().filter_map(|r| Some(value(r)?.max(1e-3)));
    let y_min = ys.clone().fold(f64::INFINITY, f64::min) / 2.0;
    let y_max = ys.fold(0.0, f64::max) * 2.0;
    let x_max = runs.iter().map(|r| r.offered_pps / 1e6).fold(0.0, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            0.0..x_max.max(0.1),
            (y_min..y_max.max(y_min * 10.0)).log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("offered flood (million SYN/s)")
        .y_desc(y_label)
        // Log axes tick at 1, 2, 5 × powers of ten: as many decimals as the tick needs.
        .y_label_formatter(&|v| format!("{v:.*}", (-v.log10().floor()).max(0.0) as usize))
        .draw()
        .map_err(err)?;
    let lines = Scenario::ALL
        .into_iter()
        .map(|scenario| (scenario.name(), points(scenario)));
    draw_lines(&mut chart, lines)
}

/// One line with dots per `(label, points)`, in [`COLORS`] order, and the legend.
fn draw_lines<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    lines: impl Iterator<Item = (&'static str, Vec<(f64, f64)>)>,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let err = |e| anyhow!("drawing the plot: {e:?}");
    for ((label, points), color) in lines.zip(COLORS) {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// Writes the two panels side by side to `path`.
pub fn write(runs: &[Run], path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| anyhow!("drawing the plot: {e:?}"))?;
    let (left, right) = root.split_horizontally(550);
    panel(
        &left,
        runs,
        "server CPU per flood SYN",
        "ns per SYN (log)",
        |r| Some(r.cpu_ns_per_syn),
    )?;
    panel(
        &right,
        runs,
        "legitimate connect p99 under the flood",
        "ms (log)",
        Run::legit_p99_ms,
    )?;
    root.present()
        .map_err(|e| anyhow!("writing {}: {e:?}", path.display()))
}

/// The source sweep: server CPU per SYN and the XDP program's run time per packet against
/// the number of distinct flood sources (both axes log).
pub fn write_sweep(runs: &[Run], path: &Path) -> Result<()> {
    let err = |e| anyhow!("drawing the plot: {e:?}");
    let root = SVGBackend::new(path, (650, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let series: [(&str, Value); 2] = [
        ("server CPU ns per SYN", |r| Some(r.cpu_ns_per_syn)),
        ("XDP program ns per packet", |r| r.xdp_ns_per_packet),
    ];
    let points = |value: Value| -> Vec<(f64, f64)> {
        runs.iter()
            .filter_map(|r| Some((f64::from(r.sources?), value(r)?.max(1.0))))
            .collect()
    };
    let y_max = series
        .iter()
        .flat_map(|(_, v)| points(*v))
        .map(|(_, y)| y)
        .fold(1.0, f64::max)
        * 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption("synguard native at the highest rate", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (0.5..f64::from(1u32 << 25)).log_scale(),
            (10.0..y_max).log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("distinct flood sources (log)")
        .y_desc("ns (log)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    draw_lines(
        &mut chart,
        series
            .into_iter()
            .map(|(label, value)| (label, points(value))),
    )?;
    root.present()
        .map_err(|e| anyhow!("writing {}: {e:?}", path.display()))
}
