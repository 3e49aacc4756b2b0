//! `timeline.svg`: the first traced steps drawn, one lane per worker.
//!
//! ```text
//!   worker 0       |forward|  backward  |wait|ar 0|ar 1|adamw|forward| ...
//!   worker 1       |forward|  backward    |ar 0|ar 1|adamw|forward| ...
//!   worker 1 comm                (overlapped buckets, when --overlap)
//!                  0 ms                                          t ms
//! ```
//! Each span is a rectangle coloured by its phase, on a time axis shared by every lane,
//! with a legend of the phases that occur.

use std::fmt::Write;

use nanodist::trace::{Phase, Span};

/// Steps drawn, from the first one traced.
const STEPS: usize = 3;
const WIDTH: f64 = 960.0;
const LEFT: f64 = 110.0;
const LANE: f64 = 26.0;
const TOP: f64 = 30.0;

/// The colour of a phase (every bucket's all-reduce shares one).
fn colour(phase: Phase) -> &'static str {
    match phase {
        Phase::Forward => "#4e79a7",
        Phase::Backward => "#f28e2b",
        Phase::Wait => "#bab0ac",
        Phase::AllReduce(_) => "#e15759",
        Phase::CommWait => "#ff9d9a",
        Phase::Optimizer => "#59a14f",
        Phase::Eval => "#b07aa1",
        Phase::Checkpoint => "#9c755f",
        Phase::Straggle => "#edc948",
        Phase::FixedPoint => "#76b7b2",
    }
}

/// The legend's name of a phase (buckets together).
fn legend_name(phase: Phase) -> String {
    match phase {
        Phase::AllReduce(_) => "all-reduce (a bucket)".into(),
        p => p.name(),
    }
}

/// Draws the first [`STEPS`] steps of `tracks` (`tracks[w]`: worker w's spans) as an SVG.
pub fn timeline_svg(tracks: &[Vec<Span>]) -> String {
    let first = tracks.iter().flatten().map(|s| s.step).min().unwrap_or(0);
    let shown = |s: &&Span| s.step >= first && s.step < first + STEPS;
    // lanes: each worker's own thread, then its communication thread where it has one
    let mut lanes: Vec<(String, Vec<Span>)> = Vec::new();
    for (w, spans) in tracks.iter().enumerate() {
        let own = spans
            .iter()
            .filter(shown)
            .filter(|s| !s.comm_thread)
            .copied();
        lanes.push((format!("worker {w}"), own.collect()));
        let comm: Vec<Span> = spans
            .iter()
            .filter(shown)
            .filter(|s| s.comm_thread)
            .copied()
            .collect();
        if !comm.is_empty() {
            lanes.push((format!("worker {w} comm"), comm));
        }
    }
    let all = lanes.iter().flat_map(|(_, s)| s);
    let t0 = all
        .clone()
        .map(|s| s.start_us)
        .fold(f64::INFINITY, f64::min);
    let t1 = all
        .map(|s| s.start_us + s.dur_us)
        .fold(f64::NEG_INFINITY, f64::max);
    let (t0, span_us) = if t1 > t0 { (t0, t1 - t0) } else { (0.0, 1.0) };
    let x = |us: f64| LEFT + (us - t0) / span_us * (WIDTH - LEFT - 10.0);

    let mut legend: Vec<Phase> = Vec::new();
    let mut body = String::new();
    for (i, (name, spans)) in lanes.iter().enumerate() {
        let y = TOP + i as f64 * LANE;
        let _ = writeln!(
            body,
            r#"<text x="4" y="{:.1}" font-size="12">{name}</text>"#,
            y + LANE * 0.6
        );
        for s in spans {
            let (x0, x1) = (x(s.start_us), x(s.start_us + s.dur_us.max(0.0)));
            let _ = writeln!(
                body,
                r#"<rect x="{x0:.2}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{}"><title>{} (step {}): {:.2} ms</title></rect>"#,
                y + 2.0,
                (x1 - x0).max(0.5),
                LANE - 4.0,
                colour(s.phase),
                s.phase.name(),
                s.step,
                s.dur_us / 1e3
            );
            if !legend
                .iter()
                .any(|p| legend_name(*p) == legend_name(s.phase))
            {
                legend.push(s.phase);
            }
        }
    }
    let axis_y = TOP + lanes.len() as f64 * LANE + 14.0;
    let _ = writeln!(
        body,
        r#"<text x="{LEFT}" y="{axis_y:.1}" font-size="11">0 ms</text><text x="{:.1}" y="{axis_y:.1}" font-size="11" text-anchor="end">{:.1} ms</text>"#,
        WIDTH - 10.0,
        span_us / 1e3
    );
    let legend_y = axis_y + 18.0;
    for (i, p) in legend.iter().enumerate() {
        let lx = 10.0 + (i % 5) as f64 * 185.0;
        let ly = legend_y + (i / 5) as f64 * 18.0;
        let _ = writeln!(
            body,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            ly - 10.0,
            colour(*p),
            lx + 16.0,
            ly,
            legend_name(*p)
        );
    }
    let height = legend_y + (legend.len().div_ceil(5).max(1)) as f64 * 18.0 + 6.0;
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="4" y="18" font-size="14">the first {} traced steps, one lane per worker</text>
{body}</svg>
"#,
        STEPS.min(
            lanes
                .iter()
                .flat_map(|(_, s)| s)
                .map(|s| s.step)
                .max()
                .map_or(0, |m| m + 1 - first)
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_lane_per_worker_and_a_legend() {
        let span = |phase, step, start_us, comm_thread| Span {
            phase,
            step,
            start_us,
            dur_us: 10.0,
            comm_thread,
        };
        let tracks = vec![
            vec![
                span(Phase::Forward, 0, 0.0, false),
                span(Phase::AllReduce(0), 0, 12.0, true),
                span(Phase::Forward, 9, 50.0, false), // past the steps drawn
            ],
            vec![span(Phase::Backward, 0, 5.0, false)],
        ];
        let svg = timeline_svg(&tracks);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for lane in ["worker 0", "worker 0 comm", "worker 1"] {
            assert!(svg.contains(&format!(">{lane}<")), "no lane {lane}");
        }
        assert_eq!(svg.matches("<title>").count(), 3);
        assert!(svg.contains(">all-reduce (a bucket)<") && svg.contains(">backward<"));
    }
}
