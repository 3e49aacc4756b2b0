//! Line charts as plain SVG text: `loss.svg` and `scaling.svg`.
//!
//! A chart is a handful of polylines inside a frame with ticks. Writing the SVG by hand
//! (about 150 lines) keeps the crate free of font and image libraries, so it builds on a
//! bare machine, and the output opens in any browser.
//!
//! ```text
//!   y ^  title
//!     |  \__  train           data space (x, y) is mapped linearly into the
//!     |     \___ val          plot box; ticks sit at "nice" steps (1, 2, 5 x 10^k)
//!     | - - - - - - floor
//!     +------------------> x
//! ```

use std::fmt::Write;

/// One named line on a chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// Points in data coordinates, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Any SVG colour.
    pub color: &'static str,
    /// Dashed line (used for reference lines such as "ideal" or "floor").
    pub dashed: bool,
}

/// A chart: a title, axis labels and some series.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    /// Printed above the plot.
    pub title: String,
    /// Label under the x axis.
    pub x_label: String,
    /// Label left of the y axis.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
    /// Force the y axis to start at zero.
    pub y_from_zero: bool,
    /// A dotted vertical line at this x, labelled (the core count on `scaling.svg`).
    pub x_mark: Option<(f64, String)>,
}

const W: f64 = 720.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;

impl Chart {
    /// Renders the chart as a complete SVG document.
    pub fn to_svg(&self) -> String {
        let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
        let all: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter(finite).copied())
            .collect();
        let (mut x0, mut x1) = min_max(all.iter().map(|p| p.0));
        let (mut y0, mut y1) = min_max(all.iter().map(|p| p.1));
        if self.y_from_zero {
            y0 = y0.min(0.0);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        if y1 <= y0 {
            y1 = y0 + 1.0;
        }
        // whole-number data (steps, threads) gets whole-number ticks: no "1.5 threads"
        let whole = all.iter().all(|p| p.0.fract() == 0.0);
        let xt = nice_ticks(x0, x1, if whole { 1.0 } else { 0.0 });
        let yt = nice_ticks(y0, y1, 0.0);
        (x0, x1) = (x0.min(xt[0]), x1.max(*xt.last().unwrap()));
        (y0, y1) = (y0.min(yt[0]), y1.max(*yt.last().unwrap()));
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            W / 2.0,
            escape(&self.title)
        );
        for &x in &xt {
            let px = sx(x);
            let _ = writeln!(
                s,
                r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#e4e4e4"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 16.0,
                fmt_tick(x)
            );
        }
        for &y in &yt {
            let py = sy(y);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                py + 4.0,
                fmt_tick(y)
            );
        }
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            H - 12.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            escape(&self.y_label)
        );
        if let Some((x, label)) = &self.x_mark {
            if (x0..=x1).contains(x) {
                let px = sx(*x);
                let _ = writeln!(
                    s,
                    r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#555555" stroke-dasharray="2 3"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#555555">{}</text>"##,
                    TOP + ph,
                    px + 4.0,
                    TOP + ph - 6.0,
                    escape(label)
                );
            }
        }
        let dash = |series: &Series| {
            if series.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            }
        };
        for series in &self.series {
            let pts: Vec<String> = series
                .points
                .iter()
                .filter(finite)
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.8"{} points="{}"/>"#,
                series.color,
                dash(series),
                pts.join(" ")
            );
            if series.points.len() <= 24 && !series.dashed {
                for p in &pts {
                    let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{}"/>"#,
                        series.color
                    );
                }
            }
        }
        // The legend last, on a white box above the lines.
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="176" height="{:.1}" fill="white" fill-opacity="0.85" stroke="#cccccc"/>"##,
            LEFT + pw - 158.0,
            TOP + 4.0,
            16.0 * self.series.len() as f64 + 6.0
        );
        for (i, series) in self.series.iter().enumerate() {
            let ly = TOP + 14.0 + 16.0 * i as f64;
            let lx = LEFT + pw - 150.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{}/><text x="{}" y="{}">{}</text>"#,
                lx + 22.0,
                series.color,
                dash(series),
                lx + 28.0,
                ly + 4.0,
                escape(&series.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

/// Tick positions at a "nice" step (1, 2 or 5 times a power of ten), about 6 of them, and at
/// least `min_step` apart.
fn nice_ticks(lo: f64, hi: f64, min_step: f64) -> Vec<f64> {
    let raw = ((hi - lo) / 6.0).max(min_step);
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).floor() * step;
    let count = ((hi - first) / step).ceil() as usize;
    (0..=count).map(|i| first + i as f64 * step).collect()
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 1e4 {
        format!("{}k", fmt_tick(v / 1e3))
    } else if v != 0.0 && v.abs() < 1e-2 {
        format!("{v:.0e}")
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

/// `text` made safe for SVG text and attribute values.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_cover_the_range_at_a_nice_step() {
        let t = nice_ticks(0.3, 9.7, 0.0);
        assert!(t[0] <= 0.3 && *t.last().unwrap() >= 9.7, "{t:?}");
        let step = t[1] - t[0];
        assert!((step - 2.0).abs() < 1e-12, "{t:?}");
        // 1..4 threads would get a step of 0.5; whole-number data asks for at least 1
        assert_eq!(nice_ticks(1.0, 4.0, 0.0)[1], 1.5);
        assert_eq!(nice_ticks(1.0, 4.0, 1.0), vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn whole_number_x_gets_whole_ticks_and_the_mark_is_drawn_inside_the_range() {
        let series = vec![Series {
            name: "strong".into(),
            points: vec![(1.0, 10.0), (2.0, 19.0), (4.0, 30.0)],
            color: "blue",
            dashed: false,
        }];
        let chart = |mark: f64| Chart {
            series: series.clone(),
            x_mark: Some((mark, "2 cores".into())),
            ..Chart::default()
        };
        let svg = chart(2.0).to_svg();
        assert!(!svg.contains(">1.5</text>"), "half-thread tick");
        assert!(svg.contains(">3</text>"));
        assert_eq!(svg.matches("2 cores").count(), 1);
        // a mark outside the data's range is left out rather than drawn off the plot
        assert!(!chart(8.0).to_svg().contains("2 cores"));
    }

    #[test]
    fn svg_has_one_polyline_per_series_and_escapes_text() {
        let chart = Chart {
            title: "loss <train & val>".into(),
            series: vec![
                Series {
                    name: "train".into(),
                    points: vec![(0.0, 4.0), (1.0, 2.0), (2.0, f64::NAN)],
                    color: "steelblue",
                    dashed: false,
                },
                Series {
                    name: "floor".into(),
                    points: vec![(0.0, 1.0), (2.0, 1.0)],
                    color: "gray",
                    dashed: true,
                },
            ],
            ..Chart::default()
        };
        let svg = chart.to_svg();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("loss &lt;train &amp; val&gt;"));
        assert!(!svg.contains("NaN"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
