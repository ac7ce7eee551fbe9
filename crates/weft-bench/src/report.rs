//! One JSON line per figure.

use serde::Serialize;

/// A measured figure and the baseline it is compared with.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured, dotted: `suite.subject.detail`.
    pub name: String,
    /// The measurement.
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
    /// What the baseline is.
    pub baseline: String,
    /// The baseline's measurement in the same run, same unit.
    pub baseline_value: f64,
    /// value / baseline_value (inverted for less-is-better figures: see [`Figure::inverted`]).
    pub ratio: f64,
}

impl Figure {
    /// A figure with its ratio computed.
    pub fn new(
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        baseline: impl Into<String>,
        baseline_value: f64,
    ) -> Figure {
        let ratio = if baseline_value == 0.0 { f64::NAN } else { value / baseline_value };
        Figure {
            name: name.into(),
            value: round(value),
            unit,
            baseline: baseline.into(),
            baseline_value: round(baseline_value),
            ratio: round(ratio),
        }
    }

    /// For figures where less is better (latency, time): the ratio becomes baseline / value, so
    /// that a ratio above 1 always means weft did better.
    pub fn inverted(mut self) -> Figure {
        self.ratio = if self.value == 0.0 { f64::NAN } else { round(self.baseline_value / self.value) };
        self
    }

    /// Prints the figure as one JSON line on stdout.
    pub fn print(&self) {
        println!("{}", serde_json::to_string(self).expect("figures serialize"));
    }
}

fn round(x: f64) -> f64 {
    if x.is_finite() { (x * 1000.0).round() / 1000.0 } else { x }
}
