//! A table's figures as the cache holds them (per model, row, seed and column) and their summary
//! over seeds: the data that the Markdown/JSON/CSV tables (`report.rs`) and the PNG figure
//! (`figure.rs`) both draw from, kept apart so that neither imports the other for it.

use crate::spec::Family;

/// A table's figures: per model, per row, per seed, per column.
pub(crate) struct Figures {
    pub models: Vec<ModelFigures>,
    pub pending: usize,
}

pub(crate) struct ModelFigures {
    pub id: String,
    pub label: String,
    pub rows: Vec<RowFigures>,
}

pub(crate) struct RowFigures {
    pub id: String,
    pub label: String,
    pub family: Family,
    pub runs: Vec<SeedFigures>,
}

/// One run's figures.
pub(crate) struct SeedFigures {
    /// `None`: the row reads no calibration, and this run stands for every seed.
    pub seed: Option<u64>,
    pub key: Option<String>,
    pub values: Vec<Option<f64>>,
    /// Zero-shot columns: the standard error of the accuracy, in points.
    pub stderr: Vec<Option<f64>>,
    /// Zero-shot columns: the majority class's share of the scored items, in percent.
    pub majority: Vec<Option<f64>>,
}

/// Mean, sample standard deviation and count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    pub n: usize,
    pub mean: f64,
    /// `n − 1` in the denominator; 0 for one value.
    pub sd: f64,
}

pub(crate) fn summary(v: &[f64]) -> Option<Summary> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let sd = if n > 1 { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { 0.0 };
    Some(Summary { n, mean, sd })
}
