//! Horizontal bar charts as inline SVG. The geometry is computed here; the template only draws
//! the shapes, so every label goes through the template's HTML escaping.

use serde::Serialize;

/// Width of the SVG coordinate system of a full-width chart; the element itself scales to its
/// container, so this is about the container's width in pixels to keep text at its CSS size.
pub const FULL_WIDTH: f64 = 1110.0;
/// Room on the left for the row labels.
const LABEL_WIDTH: f64 = 150.0;
/// Space between two series panels.
const PANEL_GAP: f64 = 28.0;
/// Room after the longest bar for its value.
const VALUE_ROOM: f64 = 90.0;
const HEADER_HEIGHT: f64 = 30.0;
const ROW_HEIGHT: f64 = 32.0;
const BAR_HEIGHT: f64 = 18.0;
const BOTTOM_PAD: f64 = 6.0;
/// Labels longer than this are shortened (the full name stays in the tooltip).
const MAX_LABEL_CHARS: usize = 20;

/// One series of a chart: drawn as its own panel with its own scale.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    /// Panel heading, e.g. "Accelerators".
    pub title: &'static str,
    /// CSS class of the bars (`bar-gpu`, `bar-cpu`, ...).
    pub class: &'static str,
    /// Unit after each value, e.g. "GPUs".
    pub unit: &'static str,
}

/// One row: a label and one value per series.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: String,
    pub values: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub class: &'static str,
    /// Tooltip; empty for none.
    pub title: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Text {
    pub x: f64,
    pub y: f64,
    pub anchor: &'static str,
    pub class: &'static str,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LegendItem {
    pub label: &'static str,
    pub class: &'static str,
}

/// A chart ready for the `bar_chart` template macro.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    /// Element id of the `<svg>`.
    pub id: &'static str,
    pub title: String,
    pub width: f64,
    pub height: f64,
    pub rects: Vec<Rect>,
    pub texts: Vec<Text>,
    pub legend: Vec<LegendItem>,
}

/// Rounds to one decimal so the SVG stays small and readable.
fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// A number without a trailing `.0`, at most two decimals: `8`, `0.5`, `1.25`.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_string();
    }
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

fn short_label(label: &str) -> String {
    if label.chars().count() <= MAX_LABEL_CHARS {
        return label.to_string();
    }
    let mut s: String = label.chars().take(MAX_LABEL_CHARS - 1).collect();
    s.push('…');
    s
}

/// Builds a horizontal bar chart with one panel per series; `None` when there are no rows.
pub fn bar_chart(
    id: &'static str,
    title: &str,
    width: f64,
    series: &[Series],
    rows: &[Row],
) -> Option<Chart> {
    if rows.is_empty() || series.is_empty() {
        return None;
    }
    let n = series.len() as f64;
    let panel_width = (width - LABEL_WIDTH - PANEL_GAP * (n - 1.0)) / n;
    let bar_room = (panel_width - VALUE_ROOM).max(10.0);
    let height = HEADER_HEIGHT + ROW_HEIGHT * rows.len() as f64 + BOTTOM_PAD;
    let mut rects = Vec::new();
    let mut texts = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let mid = HEADER_HEIGHT + ROW_HEIGHT * i as f64 + ROW_HEIGHT / 2.0;
        texts.push(Text {
            x: LABEL_WIDTH - 12.0,
            y: r1(mid + 4.5),
            anchor: "end",
            class: "chart-label",
            text: short_label(&row.label),
        });
    }
    for (p, s) in series.iter().enumerate() {
        let x0 = r1(LABEL_WIDTH + (panel_width + PANEL_GAP) * p as f64);
        texts.push(Text {
            x: x0,
            y: 16.0,
            anchor: "start",
            class: "chart-series",
            text: s.title.into(),
        });
        let max = rows
            .iter()
            .map(|r| r.values.get(p).copied().unwrap_or(0.0))
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::max);
        for (i, row) in rows.iter().enumerate() {
            let v = row
                .values
                .get(p)
                .copied()
                .filter(|v| v.is_finite())
                .unwrap_or(0.0)
                .max(0.0);
            let top = HEADER_HEIGHT + ROW_HEIGHT * i as f64 + (ROW_HEIGHT - BAR_HEIGHT) / 2.0;
            let tooltip = format!("{}: {} {}", row.label, fmt_num(v), s.unit);
            rects.push(Rect {
                x: x0,
                y: r1(top),
                w: r1(bar_room),
                h: BAR_HEIGHT,
                class: "chart-track",
                title: String::new(),
            });
            let mut w = if max > 0.0 { v / max * bar_room } else { 0.0 };
            if v > 0.0 && w < 3.0 {
                w = 3.0;
            }
            if w > 0.0 {
                rects.push(Rect {
                    x: x0,
                    y: r1(top),
                    w: r1(w),
                    h: BAR_HEIGHT,
                    class: s.class,
                    title: tooltip,
                });
            }
            texts.push(Text {
                x: r1(x0 + bar_room + 8.0),
                y: r1(top + BAR_HEIGHT / 2.0 + 4.5),
                anchor: "start",
                class: "chart-value",
                text: format!("{} {}", fmt_num(v), s.unit),
            });
        }
    }
    Some(Chart {
        id,
        title: title.to_string(),
        width,
        height: r1(height),
        rects,
        texts,
        legend: series
            .iter()
            .map(|s| LegendItem {
                label: s.title,
                class: s.class,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPU: Series = Series {
        title: "Accelerators",
        class: "bar-gpu",
        unit: "GPUs",
    };
    const CPU: Series = Series {
        title: "CPU cores",
        class: "bar-cpu",
        unit: "cores",
    };

    fn row(label: &str, values: &[f64]) -> Row {
        Row {
            label: label.into(),
            values: values.to_vec(),
        }
    }

    #[test]
    fn numbers_drop_needless_decimals() {
        assert_eq!(fmt_num(8.0), "8");
        assert_eq!(fmt_num(0.5), "0.5");
        assert_eq!(fmt_num(1.25), "1.25");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(f64::NAN), "-");
    }

    #[test]
    fn no_rows_no_chart() {
        assert!(bar_chart("c", "t", FULL_WIDTH, &[GPU], &[]).is_none());
    }

    #[test]
    fn bars_scale_to_the_largest_value_per_series() {
        let c = bar_chart(
            "c",
            "t",
            FULL_WIDTH,
            &[GPU, CPU],
            &[row("a", &[16.0, 64.0]), row("b", &[0.0, 256.0])],
        )
        .unwrap();
        let bars: Vec<&Rect> = c
            .rects
            .iter()
            .filter(|r| r.class.starts_with("bar-"))
            .collect();
        // b has no GPUs: three bars, not four.
        assert_eq!(bars.len(), 3);
        let track = c.rects.iter().find(|r| r.class == "chart-track").unwrap().w;
        let gpu_a = bars.iter().find(|r| r.class == "bar-gpu").unwrap();
        assert_eq!(gpu_a.w, track);
        let cpus: Vec<f64> = bars
            .iter()
            .filter(|r| r.class == "bar-cpu")
            .map(|r| r.w)
            .collect();
        assert_eq!(cpus.len(), 2);
        assert!((cpus[0] * 4.0 - cpus[1]).abs() < 0.5, "{cpus:?}");
        assert!(c.texts.iter().any(|t| t.text == "256 cores"));
        assert!(c.texts.iter().any(|t| t.text == "0 GPUs"));
        assert_eq!(c.legend.len(), 2);
    }

    #[test]
    fn long_labels_are_shortened() {
        let long = "a-very-long-pool-name-that-goes-on";
        let c = bar_chart("c", "t", FULL_WIDTH, &[GPU], &[row(long, &[1.0])]).unwrap();
        let label = c.texts.iter().find(|t| t.class == "chart-label").unwrap();
        assert_eq!(label.text.chars().count(), MAX_LABEL_CHARS);
        assert!(label.text.ends_with('…'));
        assert!(c.rects.iter().any(|r| r.title.starts_with(long)));
    }
}
