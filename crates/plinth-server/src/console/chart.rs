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

/// One column of a drift chart: its deciding statistic against its threshold.
#[derive(Debug, Clone)]
pub struct DriftBar {
    pub label: String,
    /// `PSI`, `JS`, ...
    pub statistic: &'static str,
    pub value: f64,
    pub threshold: f64,
    pub drifted: bool,
    /// The other test that can make the column drift (`KS`, `chi²`), named when it did so
    /// with the bar's statistic under its threshold.
    pub other: &'static str,
    /// Extra text for the tooltip (other statistics, the reason).
    pub detail: String,
}

/// Multiples of the threshold shown before a bar is cut off (its value is still printed).
const DRIFT_AXIS_MAX: f64 = 4.0;

/// A horizontal bar per column: the statistic as a multiple of its threshold (the dashed line
/// at 1×), drifted columns in the drift colour. Bars past 4× are cut at the edge.
pub fn drift_chart(id: &'static str, title: &str, width: f64, bars: &[DriftBar]) -> Option<Chart> {
    if bars.is_empty() {
        return None;
    }
    let bar_room = (width - LABEL_WIDTH - VALUE_ROOM * 2.0).max(10.0);
    let height = HEADER_HEIGHT + ROW_HEIGHT * bars.len() as f64 + BOTTOM_PAD;
    let x0 = LABEL_WIDTH;
    let scale = bar_room / DRIFT_AXIS_MAX;
    let mut rects = Vec::new();
    let mut texts = vec![Text {
        x: x0,
        y: 16.0,
        anchor: "start",
        class: "chart-series",
        text: "statistic ÷ threshold".into(),
    }];
    for (i, b) in bars.iter().enumerate() {
        let top = HEADER_HEIGHT + ROW_HEIGHT * i as f64 + (ROW_HEIGHT - BAR_HEIGHT) / 2.0;
        texts.push(Text {
            x: LABEL_WIDTH - 12.0,
            y: r1(top + BAR_HEIGHT / 2.0 + 4.5),
            anchor: "end",
            class: "chart-label",
            text: short_label(&b.label),
        });
        rects.push(Rect {
            x: x0,
            y: r1(top),
            w: r1(bar_room),
            h: BAR_HEIGHT,
            class: "chart-track",
            title: String::new(),
        });
        let ratio = if b.threshold > 0.0 && b.value.is_finite() {
            (b.value / b.threshold).max(0.0)
        } else {
            0.0
        };
        let mut w = ratio.min(DRIFT_AXIS_MAX) * scale;
        if b.value > 0.0 && w < 3.0 {
            w = 3.0;
        }
        let class = if b.drifted {
            "bar-drift"
        } else {
            "bar-nodrift"
        };
        rects.push(Rect {
            x: x0,
            y: r1(top),
            w: r1(w),
            h: BAR_HEIGHT,
            class,
            title: format!(
                "{}: {} {} (threshold {}){}{}",
                b.label,
                b.statistic,
                fmt_num(b.value),
                fmt_num(b.threshold),
                if b.drifted { ", drifted" } else { "" },
                if b.detail.is_empty() {
                    String::new()
                } else {
                    format!("; {}", b.detail)
                }
            ),
        });
        rects.push(Rect {
            x: r1(x0 + scale - 1.0),
            y: r1(top - 3.0),
            w: 2.0,
            h: BAR_HEIGHT + 6.0,
            class: "chart-threshold",
            title: format!("threshold {} {}", b.statistic, fmt_num(b.threshold)),
        });
        texts.push(Text {
            x: r1(x0 + bar_room + 8.0),
            y: r1(top + BAR_HEIGHT / 2.0 + 4.5),
            anchor: "start",
            class: "chart-value",
            text: format!(
                "{} {} / {}{}",
                b.statistic,
                fmt_num(b.value),
                fmt_num(b.threshold),
                match (b.drifted, ratio >= 1.0) {
                    (false, _) => String::new(),
                    (true, true) => " drift".to_string(),
                    (true, false) => format!(" drift by {}", b.other),
                }
            ),
        });
    }
    Some(Chart {
        id,
        title: title.to_string(),
        width,
        height: r1(height),
        rects,
        texts,
        legend: vec![
            LegendItem {
                label: "drifted",
                class: "bar-drift",
            },
            LegendItem {
                label: "within threshold",
                class: "bar-nodrift",
            },
        ],
    })
}

/// Vertical bars of two distributions over the same bins, overlaid: the reference wide and
/// pale, the current narrow and dark. Values are shares (0 to 1).
pub fn overlay_chart(
    id: &'static str,
    title: &str,
    width: f64,
    labels: &[String],
    reference: &[f64],
    current: &[f64],
) -> Option<Chart> {
    let n = labels.len();
    if n == 0 || reference.len() != n || current.len() != n {
        return None;
    }
    let (left, top, plot_h, label_h) = (40.0, 24.0, 180.0, 40.0);
    let height = top + plot_h + label_h;
    let slot = (width - left - 10.0) / n as f64;
    let max = reference
        .iter()
        .chain(current)
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let mut rects = Vec::new();
    let mut texts = vec![Text {
        x: left,
        y: 14.0,
        anchor: "start",
        class: "chart-series",
        text: format!("share of values, highest {:.1}%", max * 100.0),
    }];
    let base = top + plot_h;
    for i in 0..n {
        let x = left + slot * i as f64;
        for (v, class, pad, who) in [
            (reference[i], "bar-reference", 0.08, "reference"),
            (current[i], "bar-current", 0.3, "current"),
        ] {
            let h = if max > 0.0 && v.is_finite() {
                v / max * plot_h
            } else {
                0.0
            };
            if h <= 0.0 {
                continue;
            }
            rects.push(Rect {
                x: r1(x + slot * pad),
                y: r1(base - h),
                w: r1((slot * (1.0 - 2.0 * pad)).max(1.0)),
                h: r1(h),
                class,
                title: format!("{}: {who} {:.1}%", labels[i], v * 100.0),
            });
        }
        // Label every bin when they fit, else every other one.
        let every = if n > 12 { 2 } else { 1 };
        if i % every == 0 {
            texts.push(Text {
                x: r1(x + slot / 2.0),
                y: r1(base + 16.0),
                anchor: "middle",
                class: "chart-tick",
                text: short_label(&labels[i]),
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
        legend: vec![
            LegendItem {
                label: "reference",
                class: "bar-reference",
            },
            LegendItem {
                label: "current",
                class: "bar-current",
            },
        ],
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

    fn bar(label: &str, value: f64, threshold: f64, drifted: bool) -> DriftBar {
        DriftBar {
            label: label.into(),
            statistic: "PSI",
            value,
            threshold,
            drifted,
            other: "KS",
            detail: String::new(),
        }
    }

    #[test]
    fn drift_bars_scale_to_their_threshold_and_mark_drift() {
        let c = drift_chart(
            "d",
            "t",
            FULL_WIDTH,
            &[
                bar("temp", 8.0, 0.2, true),
                bar("humid", 0.1, 0.2, false),
                bar("visib", 0.1, 0.2, true),
            ],
        )
        .unwrap();
        let drift: Vec<&Rect> = c.rects.iter().filter(|r| r.class == "bar-drift").collect();
        let ok: Vec<&Rect> = c
            .rects
            .iter()
            .filter(|r| r.class == "bar-nodrift")
            .collect();
        assert_eq!((drift.len(), ok.len()), (2, 1));
        let track = c.rects.iter().find(|r| r.class == "chart-track").unwrap().w;
        // 40x the threshold is cut at the edge; half the threshold is an eighth of the axis.
        assert_eq!(drift[0].w, track);
        assert!((ok[0].w - track / 8.0).abs() < 0.2, "{} {}", ok[0].w, track);
        let marks: Vec<&Rect> = c
            .rects
            .iter()
            .filter(|r| r.class == "chart-threshold")
            .collect();
        assert_eq!(marks.len(), 3);
        assert!((marks[0].x + 1.0 - (LABEL_WIDTH + track / 4.0)).abs() < 0.2);
        assert!(c.texts.iter().any(|t| t.text == "PSI 8 / 0.2 drift"));
        assert!(
            c.texts
                .iter()
                .any(|t| t.text == "PSI 0.1 / 0.2 drift by KS")
        );
        assert!(c.texts.iter().any(|t| t.text == "PSI 0.1 / 0.2"));
        assert!(drift_chart("d", "t", FULL_WIDTH, &[]).is_none());
    }

    #[test]
    fn overlay_draws_both_sides_per_bin() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let c = overlay_chart("o", "t", FULL_WIDTH, &labels, &[0.5, 0.5], &[1.0, 0.0]).unwrap();
        let refs = c
            .rects
            .iter()
            .filter(|r| r.class == "bar-reference")
            .count();
        let curs: Vec<&Rect> = c
            .rects
            .iter()
            .filter(|r| r.class == "bar-current")
            .collect();
        assert_eq!((refs, curs.len()), (2, 1));
        assert_eq!(curs[0].h, 180.0);
        assert!(overlay_chart("o", "t", FULL_WIDTH, &labels, &[1.0], &[1.0, 0.0]).is_none());
    }
}
