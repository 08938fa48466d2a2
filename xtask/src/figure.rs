//! A table's figure (`[figure]` in its spec): one panel per pruning method, the chosen column
//! (log scale) against the rows' sparsity patterns in spec order, one line per row family (base
//! pruner, SI before pruning, reconstruction after, both, more calibration data) that joins the
//! unstructured levels and, apart from them, the N:M patterns, each point the
//! mean over the seeds finished with a bar of ± one standard deviation where there are several.
//! Each panel has its own range, labelled at least four times, so a few percent between Wanda's
//! rows stays visible beside magnitude's tens of thousands. Drawn by plotters into a buffer, encoded by `png`, written atomically beside the table.
//! Labels use a system TrueType font (DejaVu Sans or Liberation Sans); without one the figure is
//! drawn unlabelled.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::figures::{Figures, summary};
use crate::spec::{Family, Figure, Method, Pattern, Profile, Table};

const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
];

/// Registers the first system font found as plotters' "sans-serif"; whether one was found.
fn font() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        for path in FONTS {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

fn family_style(f: Family) -> (RGBColor, &'static str) {
    match f {
        Family::Dense => (RGBColor(0, 0, 0), "dense"),
        Family::Base => (RGBColor(110, 110, 110), "base pruner"),
        Family::Si => (RGBColor(31, 119, 180), "+ SI (before pruning)"),
        Family::Reconstruction => (RGBColor(255, 127, 14), "+ reconstruction (after)"),
        Family::SiReconstruction => (RGBColor(44, 160, 44), "+ SI + reconstruction"),
        Family::MoreData => (RGBColor(148, 103, 189), "more calibration data"),
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Dense => "Dense",
        Method::Magnitude => "Magnitude",
        Method::Wanda => "Wanda",
        Method::SparseGpt => "SparseGPT",
        Method::Ria => "RIA",
    }
}

/// One point: (pattern index, mean, sd).
type Series = Vec<(usize, f64, f64)>;

/// The runs of consecutive points that one line joins: a line runs along the unstructured
/// levels and along the N:M patterns, never from one kind to the other (70% unstructured and
/// 2:4 are not neighbours on any sparsity axis). `nm[x]` says whether pattern `x` is N:M.
fn segments(pts: &Series, nm: &[bool]) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for p in pts {
        match out.last_mut() {
            Some(seg) if seg.last().is_some_and(|q| nm.get(q.0) == nm.get(p.0)) => seg.push(*p),
            _ => out.push(vec![*p]),
        }
    }
    out
}

/// Draws `fig` for the first model of `figures` into `path`.
pub(crate) fn draw(table: &Table, _profile: &Profile, fig: &Figure, figures: &Figures, path: &Path) -> Result<()> {
    let Some(model) = figures.models.first() else { return Ok(()) };
    let column = table.columns.iter().position(|c| c.id == fig.column).context("the figure's column")?;
    // The x axis: each pattern's name, and whether it is N:M (which lines may join).
    let mut patterns: Vec<(String, bool)> = Vec::new();
    let mut methods: Vec<Method> = Vec::new();
    // (method, family) → points
    let mut lines: Vec<(Method, Family, Series)> = Vec::new();
    for r in &model.rows {
        let Some(row) = table.row(&r.id) else { continue };
        let Some(pattern) = row.pattern else { continue };
        let p = pattern.to_string().replace(" unstructured", "");
        let x = match patterns.iter().position(|(q, _)| *q == p) {
            Some(i) => i,
            None => {
                patterns.push((p, matches!(pattern, Pattern::NM { .. })));
                patterns.len() - 1
            }
        };
        if !methods.contains(&row.method) {
            methods.push(row.method);
        }
        let values: Vec<f64> = r.runs.iter().filter_map(|run| run.values[column]).collect();
        let Some(s) = summary(&values) else { continue };
        let family = row.family();
        match lines.iter_mut().find(|(m, f, _)| *m == row.method && *f == family) {
            Some((_, _, pts)) => pts.push((x, s.mean, s.sd)),
            None => lines.push((row.method, family, vec![(x, s.mean, s.sd)])),
        }
    }
    if lines.is_empty() {
        return Ok(());
    }
    for (_, _, pts) in &mut lines {
        pts.sort_by_key(|p| p.0);
    }
    // Each panel has its own range: magnitude's perplexities reach tens of thousands while
    // Wanda's and SparseGPT's differences are a few percent, which a shared axis would flatten.
    let range = |method: Method| {
        let (lo, hi) = lines
            .iter()
            .filter(|(m, _, _)| *m == method)
            .flat_map(|(_, _, p)| p.iter())
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), (_, m, sd)| (lo.min((m - sd).max(m * 0.5)), hi.max(m + sd)));
        // Headroom above the highest point for the legend (a quarter of the panel, log scale).
        let (lo, hi) = (lo * 0.8, hi * 1.25);
        if lo.is_finite() { (lo, hi * (hi / lo).powf(0.35)) } else { (1.0, 10.0) }
    };
    let nm: Vec<bool> = patterns.iter().map(|(_, nm)| *nm).collect();
    let labels = font();
    let size = (420 * methods.len().max(1) as u32, 460u32);
    let mut buf = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let root = if labels { root.titled(&fig.title, ("sans-serif", 20)).map_err(|e| anyhow::anyhow!("{e}"))? } else { root };
        let panels = root.split_evenly((1, methods.len().max(1)));
        for (panel, method) in panels.iter().zip(&methods) {
            let (lo, hi) = range(*method);
            let n = patterns.len();
            let mut builder = ChartBuilder::on(panel);
            builder.margin(12);
            if labels {
                builder.caption(method_name(*method), ("sans-serif", 18)).x_label_area_size(36).y_label_area_size(56);
            }
            let mut chart = builder
                .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut mesh = chart.configure_mesh();
            mesh.x_labels(n).disable_x_mesh();
            let names: Vec<String> = patterns.iter().map(|(name, _)| name.clone()).collect();
            let fmt = move |x: &f64| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 { names.get(i as usize).cloned().unwrap_or_default() } else { String::new() }
            };
            mesh.x_label_formatter(&fmt);
            let y_fmt = |y: &f64| if *y >= 10.0 { format!("{y:.0}") } else { format!("{y:.1}") };
            mesh.y_label_formatter(&y_fmt);
            if labels {
                mesh.y_desc(table.columns[column].label.as_str());
            } else {
                mesh.disable_axes();
            }
            mesh.draw().map_err(|e| anyhow::anyhow!("{e}"))?;
            for (m, family, pts) in &lines {
                if m != method {
                    continue;
                }
                let (color, name) = family_style(*family);
                let style = ShapeStyle::from(&color).stroke_width(2);
                for (i, seg) in segments(pts, &nm).iter().enumerate() {
                    let series = chart
                        .draw_series(LineSeries::new(seg.iter().map(|(x, y, _)| (*x as f64, *y)), style))
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    if labels && i == 0 {
                        series
                            .label(name)
                            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], ShapeStyle::from(&color).stroke_width(2)));
                    }
                }
                chart
                    .draw_series(pts.iter().map(|(x, y, _)| Circle::new((*x as f64, *y), 4, ShapeStyle::from(&color).filled())))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                chart
                    .draw_series(pts.iter().filter(|(_, _, sd)| *sd > 0.0).map(|(x, y, sd)| {
                        PathElement::new(vec![(*x as f64, (y - sd).max(lo)), (*x as f64, y + sd)], ShapeStyle::from(&color).stroke_width(2))
                    }))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            if labels {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .position(SeriesLabelPosition::UpperLeft)
                    .label_font(("sans-serif", 13))
                    .draw()
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let png = encode_png(&buf, size)?;
    let tmp = path.with_extension(format!("png.{}.tmp", std::process::id()));
    std::fs::write(&tmp, png).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Labelled values of a log axis over `[lo, hi]`, at least four where the range allows: the
/// powers of ten, else 1, 2, 5 × 10^k, else every 1–9 × 10^k (a panel spanning less than a
/// decade would otherwise have no label).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let within = |mantissas: &[f64]| -> Vec<f64> {
        let (k0, k1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        (k0..=k1).flat_map(|k| mantissas.iter().map(move |m| m * 10f64.powi(k))).filter(|v| *v >= lo && *v <= hi).collect()
    };
    [&[1.0][..], &[1.0, 2.0, 5.0], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]]
        .iter()
        .map(|m| within(m))
        .find(|t| t.len() >= 4)
        .unwrap_or_else(|| within(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]))
}

fn encode_png(rgb: &[u8], (w, h): (u32, u32)) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(rgb)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{log_ticks, segments};

    #[test]
    fn lines_join_unstructured_levels_and_nm_patterns_but_not_one_to_the_other() {
        // 50%, 60%, 70%, 2:4, 4:8, with 60% unfinished.
        let nm = [false, false, false, true, true];
        let pts = vec![(0, 1.0, 0.0), (2, 3.0, 0.0), (3, 4.0, 0.0), (4, 5.0, 0.0)];
        assert_eq!(segments(&pts, &nm), [vec![(0, 1.0, 0.0), (2, 3.0, 0.0)], vec![(3, 4.0, 0.0), (4, 5.0, 0.0)]]);
        assert_eq!(segments(&vec![(3, 4.0, 0.0)], &nm), [vec![(3, 4.0, 0.0)]]);
        assert!(segments(&Vec::new(), &nm).is_empty());
    }

    #[test]
    fn a_log_axis_is_labelled_even_within_one_decade() {
        assert_eq!(log_ticks(50.0, 2500.0), [50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0]);
        assert_eq!(log_ticks(70.0, 600000.0), [100.0, 1000.0, 10000.0, 100000.0]);
        assert_eq!(log_ticks(52.0, 88.0), [60.0, 70.0, 80.0]);
        assert_eq!(log_ticks(1.5, 9.0), [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    }
}
