//! PNG plots of importance distributions before and after the distribution-level stage
//! (`spindle induce --plots DIR`): for the first, middle and last block, one panel per site with
//! the first consumer's score distribution (share of weights per bin of `log10(score / median)`)
//! before (grey) and after (blue). Drawn by plotters into a buffer, encoded by `png`, written
//! atomically. Labels use a system TrueType font (DejaVu Sans or Liberation Sans) when one is
//! installed; without one the panels are drawn unlabelled and the report says so.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use plotters::prelude::*;
use spindle::induce::{BlockInduction, HISTOGRAM};
use spindle::output;

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

/// The blocks plotted: first, middle, last.
fn chosen(blocks: &[BlockInduction]) -> Vec<&BlockInduction> {
    let mut idx = vec![0, blocks.len() / 2, blocks.len().saturating_sub(1)];
    idx.dedup();
    idx.into_iter().filter_map(|i| blocks.get(i)).collect()
}

fn draw(buf: &mut [u8], size: (u32, u32), block: &BlockInduction, scorer: &str, labels: bool) -> Result<(), String> {
    let root = BitMapBackend::with_buffer(buf, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let sites: Vec<_> = block.sites.iter().filter(|s| s.histogram.is_some()).collect();
    let root = if labels {
        root.titled(&format!("block {}: {scorer} score distribution, before (grey) and after (blue)", block.index), ("sans-serif", 22))
            .map_err(|e| e.to_string())?
    } else {
        root
    };
    let panels = root.split_evenly((2, sites.len().div_ceil(2).max(1)));
    let (lo, hi, bins) = HISTOGRAM;
    let width = (hi - lo) / bins as f64;
    for (site, area) in sites.iter().zip(panels.iter()) {
        let Some((before, after)) = &site.histogram else {
            continue;
        };
        let ymax = before.iter().chain(after).cloned().fold(0.0f64, f64::max).max(1e-6) * 1.1;
        let mut chart = ChartBuilder::on(area);
        chart.margin(10);
        if labels {
            chart
                .caption(
                    format!("{}: true importance removed {:.4} -> {:.4}", site.label, site.objective_before, site.objective_after),
                    ("sans-serif", 16),
                )
                .x_label_area_size(30)
                .y_label_area_size(45);
        }
        let mut chart = chart.build_cartesian_2d(lo..hi, 0.0..ymax).map_err(|e| e.to_string())?;
        if labels {
            chart
                .configure_mesh()
                .x_desc("log10(score / median)")
                .y_desc("share of weights")
                .label_style(("sans-serif", 12))
                .draw()
                .map_err(|e| e.to_string())?;
        }
        let centers = |h: &[f64]| h.iter().enumerate().map(|(i, v)| (lo + (i as f64 + 0.5) * width, *v)).collect::<Vec<_>>();
        chart.draw_series(LineSeries::new(centers(before), RGBColor(150, 150, 150).stroke_width(2))).map_err(|e| e.to_string())?;
        chart.draw_series(LineSeries::new(centers(after), BLUE.stroke_width(2))).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

fn encode_png(rgb: &[u8], (w, h): (u32, u32)) -> anyhow::Result<Vec<u8>> {
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

/// Writes `block-<i>.png` for the first, middle and last block into `dir` (created if needed);
/// returns the files and whether they carry labels.
pub fn write_histograms(dir: &Path, blocks: &[BlockInduction], scorer: &str) -> anyhow::Result<(Vec<PathBuf>, bool)> {
    let labels = font();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let size = (1200u32, 800u32);
    let mut written = Vec::new();
    for block in chosen(blocks) {
        if !block.sites.iter().any(|s| s.histogram.is_some()) {
            continue;
        }
        let mut buf = vec![0u8; (size.0 * size.1 * 3) as usize];
        draw(&mut buf, size, block, scorer, labels).map_err(|e| anyhow::anyhow!("drawing block {}: {e}", block.index))?;
        let path = dir.join(format!("block-{}.png", block.index));
        output::write_atomic(&path, &encode_png(&buf, size)?)?;
        written.push(path);
    }
    Ok((written, labels))
}
