//! The timeline picture: a few traced steps drawn as an SVG (`timeline.svg`), one lane per worker.
//!
//! `trace.json` holds every traced span but needs a viewer (Perfetto, `chrome://tracing`);
//! this picture needs only a browser. It draws a handful of steps after the first (the first
//! step pays for warming caches and allocating, so it is longer than the rest), wide enough
//! that each bucket's all-reduce can be told apart:
//!
//! ```text
//!                 step 3                               step 4
//!                 :                                    :
//!     worker 0    [forward ][backward      ][w][adamw] [forward ][backward ...
//!         comm    :         :   [b0][b1][b2]:          :
//!     worker 1    [forward   ][backward      ][adamw]  [forward  ][backward ...
//!         comm    :         :    [b0][b1][b2]          :
//!                 +---------+---------+---------+---------+-----> ms
//!     legend: forward  backward  wait  all-reduce bucket  waiting for buckets  adamw ...
//! ```
//!
//! A lane is one worker's thread; the thin lane under it is its communication thread when
//! all-reduce overlaps backward (`--overlap`). Each box is one [`Span`], coloured by its
//! [`Phase`]; hovering over a box in a browser shows its phase, step and duration. The
//! dashed lines are where each step starts (its earliest span on any worker), so a worker
//! that waits for a slower one shows as a grey `wait` box before the exchange.
//!
//! Like the charts of `plot.rs`, the SVG is written by hand as text: no font or image library.

use std::collections::BTreeSet;
use std::fmt::Write;

use nanodist::trace::{Phase, Span};

use crate::plot::escape;

/// How many steps the picture shows at most (after skipping the first traced step).
pub const MAX_STEPS: usize = 4;

// Page geometry, in SVG pixels.
const W: f64 = 960.0;
const LEFT: f64 = 92.0; // lane labels sit left of the plot
const RIGHT: f64 = 24.0;
const TOP: f64 = 62.0; // title and step labels above the lanes
const LANE: f64 = 30.0; // a worker's compute lane
const SUB: f64 = 18.0; // its communication thread's lane, right under it
const GAP: f64 = 12.0; // between workers
const CHAR_W: f64 = 6.2; // width of one character of the 10.5px labels, roughly

/// How a phase is drawn: its legend name, fill colour, label colour and a short label.
struct Look {
    name: &'static str,
    fill: &'static str,
    ink: &'static str,
    order: usize,
}

fn look(phase: Phase) -> Look {
    let (name, fill, ink, order) = match phase {
        Phase::Forward => ("forward", "#4e79a7", "white", 0),
        Phase::Backward => ("backward", "#f28e2b", "white", 1),
        Phase::Straggle => ("straggler sleep", "#ff9da7", "#222222", 2),
        Phase::Wait => ("wait for the slowest", "#c9c3bf", "#222222", 3),
        Phase::FixedPoint => ("fixed-point sum", "#76b7b2", "white", 4),
        // neighbouring buckets alternate two greens, so their edges show
        Phase::AllReduce(b) if b % 2 == 1 => ("all-reduce bucket", "#8cc97a", "#1d3d17", 5),
        Phase::AllReduce(_) => ("all-reduce bucket", "#4f9a45", "white", 5),
        Phase::CommWait => ("waiting for buckets", "#e15759", "white", 6),
        Phase::Optimizer => ("adamw", "#b07aa1", "white", 7),
        Phase::Eval => ("eval", "#edc948", "#222222", 8),
        Phase::Checkpoint => ("checkpoint", "#9c755f", "white", 9),
        Phase::Tensor { .. } => ("tensor-parallel collective", "#17becf", "#0b2e33", 10),
        // a pipeline stage's micro-batches: the classic diagram's F m / B m boxes
        Phase::StageForward(_) => ("forward of micro-batch m", "#4e79a7", "white", 11),
        Phase::StageBackward(_) => ("backward of micro-batch m", "#f28e2b", "white", 12),
        // (its own legend entry: the legend keeps one phase per order)
        Phase::StageWeight(_) => (
            "weight gradients of micro-batch m",
            "#ffbe7d",
            "#222222",
            17,
        ),
        Phase::Pipeline => ("pipeline schedule", "#ffffff", "#222222", 13),
        // ZeRO's collectives: the reduce-scatter in the all-reduce's greens, gathers in teal
        Phase::ReduceScatter(b) if b % 2 == 1 => ("reduce-scatter", "#8cc97a", "#1d3d17", 14),
        Phase::ReduceScatter(_) => ("reduce-scatter", "#4f9a45", "white", 14),
        Phase::AllGather(_) => ("all-gather", "#17becf", "#222222", 15),
        Phase::Prefetch(_) => ("prefetch wait", "#bcbd22", "#222222", 16),
        Phase::Link => ("link (simulated)", "#bab0ac", "#222222", 10),
        Phase::Compress => ("compress", "#59a14f", "white", 11),
        Phase::Push => ("push gradient", "#86bcb6", "#222222", 12),
        Phase::Pull => ("pull weights", "#499894", "white", 13),
    };
    Look {
        name,
        fill,
        ink,
        order,
    }
}

/// The text written inside a box when it is wide enough.
fn short_label(phase: Phase) -> String {
    match phase {
        Phase::AllReduce(b) | Phase::ReduceScatter(b) => format!("b{b}"),
        Phase::AllGather(b) => format!("ag{b}"),
        Phase::Prefetch(l) => format!("pf{l}"),
        Phase::CommWait => "wait b".into(),
        Phase::Wait => "wait".into(),
        Phase::Straggle => "sleep".into(),
        Phase::FixedPoint => "fixed".into(),
        Phase::Checkpoint => "ckpt".into(),
        Phase::Tensor { layer, .. } => format!("L{layer}"),
        Phase::StageForward(m) => format!("F{m}"),
        Phase::StageBackward(m) => format!("B{m}"),
        Phase::StageWeight(m) => format!("W{m}"),
        other => look(other).name.into(),
    }
}

/// Renders the first traced steps of every worker as a complete SVG document.
///
/// `tracks[w]` holds worker w's spans, those with `comm_thread` set from its communication
/// thread. The first traced step is skipped when there are more, and at most [`MAX_STEPS`]
/// are drawn. With no span at all, the SVG says there is nothing to draw.
pub fn timeline_svg(tracks: &[Vec<Span>]) -> String {
    let all_steps: BTreeSet<usize> = tracks.iter().flatten().map(|s| s.step).collect();
    let skip = usize::from(all_steps.len() > 1);
    let steps: Vec<usize> = all_steps.into_iter().skip(skip).take(MAX_STEPS).collect();
    // (a pipeline's schedule window encloses its boxes: the gaps inside it are the bubble)
    let chosen =
        |s: &&Span| steps.contains(&s.step) && s.start_us.is_finite() && s.phase != Phase::Pipeline;
    let (t0, t1) = tracks
        .iter()
        .flatten()
        .filter(chosen)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| {
            (lo.min(s.start_us), hi.max(s.start_us + dur(s)))
        });
    if steps.is_empty() || !t0.is_finite() {
        return nothing_to_draw();
    }
    let t1 = if t1 > t0 { t1 } else { t0 + 1.0 };

    // Lanes from the top: each worker's compute lane, then its comm lane if it has one.
    let has_comm: Vec<bool> = tracks
        .iter()
        .map(|spans| spans.iter().filter(chosen).any(|s| s.comm_thread))
        .collect();
    let mut lane_y = Vec::with_capacity(tracks.len());
    let mut y = TOP;
    for &comm in &has_comm {
        lane_y.push(y);
        y += LANE + if comm { SUB + 2.0 } else { 0.0 } + GAP;
    }
    let plot_bottom = y - GAP + 6.0;

    // Time axis: milliseconds from the first drawn span, at a "nice" step.
    let span_ms = (t1 - t0) / 1e3;
    let pw = W - LEFT - RIGHT;
    let sx = |us: f64| LEFT + (us - t0) / (t1 - t0) * pw;
    let ticks = nice_ticks(span_ms);

    // The legend, in a fixed order, only for the phases that appear.
    let mut present: Vec<Phase> = Vec::new();
    for s in tracks.iter().flatten().filter(chosen) {
        let order = look(s.phase).order;
        if !present.iter().any(|p| look(*p).order == order) {
            present.push(s.phase);
        }
    }
    present.sort_by_key(|p| look(*p).order);
    let legend_top = plot_bottom + 46.0;
    let mut legend = String::new();
    let (mut lx, mut ly) = (LEFT, legend_top);
    for phase in &present {
        let l = look(*phase);
        let name = if matches!(phase, Phase::AllReduce(_)) {
            "all-reduce of bucket b0, b1, ..".to_string()
        } else {
            l.name.to_string()
        };
        let width = 20.0 + 5.9 * name.len() as f64 + 18.0; // 11px legend text
        if lx + width > W - RIGHT {
            (lx, ly) = (LEFT, ly + 20.0);
        }
        if matches!(phase, Phase::AllReduce(_)) {
            // both greens, as the buckets alternate
            let _ = write!(
                legend,
                r#"<rect x="{lx:.1}" y="{:.1}" width="7" height="12" fill="{}"/><rect x="{:.1}" y="{:.1}" width="7" height="12" fill="{}"/>"#,
                ly - 10.0,
                look(Phase::AllReduce(0)).fill,
                lx + 7.0,
                ly - 10.0,
                look(Phase::AllReduce(1)).fill
            );
        } else {
            let _ = write!(
                legend,
                r#"<rect x="{lx:.1}" y="{:.1}" width="14" height="12" fill="{}"/>"#,
                ly - 10.0,
                l.fill
            );
        }
        let _ = writeln!(
            legend,
            r#"<text x="{:.1}" y="{ly:.1}">{}</text>"#,
            lx + 20.0,
            escape(&name)
        );
        lx += width;
    }
    let height = ly + 16.0;

    let mut s = header(height);
    let (first, last) = (steps[0], steps[steps.len() - 1]);
    let steps_text = if first == last {
        format!("step {first}")
    } else {
        format!("steps {first}-{last}")
    };
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">timeline of {steps_text}, {} worker{}</text>"#,
        W / 2.0,
        tracks.len(),
        if tracks.len() == 1 { "" } else { "s" }
    );

    // Lane bands and names.
    for (w, &y) in lane_y.iter().enumerate() {
        let _ = writeln!(
            s,
            r##"<rect class="lane" x="{LEFT}" y="{y:.1}" width="{pw}" height="{LANE}" fill="#f4f4f4"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="12">worker {w}</text>"##,
            LEFT - 8.0,
            y + LANE / 2.0 + 4.0
        );
        if has_comm[w] {
            let cy = y + LANE + 2.0;
            let _ = writeln!(
                s,
                r##"<rect x="{LEFT}" y="{cy:.1}" width="{pw}" height="{SUB}" fill="#f9f9f9"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="10" fill="#666666">comm thread</text>"##,
                LEFT - 8.0,
                cy + SUB / 2.0 + 3.5
            );
        }
    }

    // Grid lines and tick labels of the time axis.
    for &ms in &ticks {
        let px = sx(t0 + ms * 1e3);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{plot_bottom:.1}" stroke="#e6e6e6"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            plot_bottom + 16.0,
            fmt_ms(ms)
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{plot_bottom:.1}" x2="{:.1}" y2="{plot_bottom:.1}" stroke="#333333"/><text x="{:.1}" y="{:.1}" text-anchor="middle">time (ms)</text>"##,
        W - RIGHT,
        LEFT + pw / 2.0,
        plot_bottom + 32.0
    );

    // One box per span; its label when the box is wide enough to hold it.
    for (w, spans) in tracks.iter().enumerate() {
        for sp in spans.iter().filter(chosen) {
            let l = look(sp.phase);
            let (y, h) = if sp.comm_thread {
                (lane_y[w] + LANE + 3.0, SUB - 2.0)
            } else {
                (lane_y[w] + 2.0, LANE - 4.0)
            };
            let x = sx(sp.start_us);
            let width = (sx(sp.start_us + dur(sp)) - x).max(0.8);
            let _ = writeln!(
                s,
                r#"<rect class="span" x="{x:.2}" y="{y:.1}" width="{width:.2}" height="{h:.1}" fill="{}" stroke="white" stroke-width="0.5"><title>worker {w}{}: {}, step {}, {:.2} ms</title></rect>"#,
                l.fill,
                if sp.comm_thread { " comm" } else { "" },
                escape(&long_name(sp.phase)),
                sp.step,
                dur(sp) / 1e3
            );
            let text = short_label(sp.phase);
            let size = if sp.comm_thread { 9.5 } else { 10.5 };
            if width >= CHAR_W * size / 10.5 * text.len() as f64 + 3.0 {
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="{size}" fill="{}" pointer-events="none">{}</text>"#,
                    x + width / 2.0,
                    y + h / 2.0 + size * 0.35,
                    l.ink,
                    escape(&text)
                );
            }
        }
    }

    // Step boundaries: a dashed line where each step's earliest span starts.
    for &step in &steps {
        let start = tracks
            .iter()
            .flatten()
            .filter(|s| s.step == step && s.start_us.is_finite())
            .map(|s| s.start_us)
            .fold(f64::INFINITY, f64::min);
        let px = sx(start);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{plot_bottom:.1}" stroke="#333333" stroke-dasharray="3 3"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#333333">step {step}</text>"##,
            TOP - 16.0,
            px + 4.0,
            TOP - 8.0
        );
    }

    s.push_str(&legend);
    s.push_str("</svg>\n");
    s
}

/// A span's duration in microseconds, never negative or NaN.
fn dur(s: &Span) -> f64 {
    if s.dur_us.is_finite() {
        s.dur_us.max(0.0)
    } else {
        0.0
    }
}

/// The phase's name in a box's tooltip (the bucket's number included).
fn long_name(phase: Phase) -> String {
    match phase {
        Phase::AllReduce(b) => format!("all-reduce of bucket {b}"),
        Phase::Tensor { layer, op } => format!("tensor-parallel {op} of layer {layer}"),
        Phase::ReduceScatter(b) => format!("reduce-scatter of bucket {b}"),
        Phase::AllGather(b) => format!("all-gather {b}"),
        Phase::Prefetch(l) => format!("waiting for block {l}'s prefetched weights"),
        other => look(other).name.into(),
    }
}

fn header(height: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height:.0}\" viewBox=\"0 0 {W} {height:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"{W}\" height=\"{height:.0}\" fill=\"white\"/>\n"
    )
}

fn nothing_to_draw() -> String {
    let mut s = header(120.0);
    let _ = writeln!(
        s,
        r##"<text x="{}" y="64" text-anchor="middle" font-size="14" fill="#555555">timeline: no traced steps, nothing to draw</text>"##,
        W / 2.0
    );
    s.push_str("</svg>\n");
    s
}

/// Ticks from 0 to `hi` milliseconds at a "nice" step (1, 2 or 5 times a power of ten),
/// about 8 of them.
fn nice_ticks(hi: f64) -> Vec<f64> {
    let raw = (hi / 8.0).max(1e-6);
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let count = (hi / step + 1e-9).floor() as usize;
    (0..=count).map(|i| i as f64 * step).collect()
}

fn fmt_ms(ms: f64) -> String {
    let s = format!("{ms:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(phase: Phase, step: usize, start_ms: f64, dur_ms: f64, comm_thread: bool) -> Span {
        Span {
            phase,
            step,
            start_us: start_ms * 1e3,
            dur_us: dur_ms * 1e3,
            comm_thread,
        }
    }

    /// A realistic overlapped run: `workers` workers, `steps` steps, 4 buckets on the comm
    /// thread during backward, the last worker a little slower than the others.
    fn synthetic(workers: usize, steps: usize) -> Vec<Vec<Span>> {
        let mut tracks = vec![Vec::new(); workers];
        let mut t = 0.0;
        for step in 0..steps {
            let warm = if step == 0 { 2.5 } else { 1.0 };
            let slow = |w: usize| if w + 1 == workers { 1.15 } else { 1.0 };
            let ends: Vec<f64> = (0..workers)
                .map(|w| t + (7.0 + 15.0) * warm * slow(w))
                .collect();
            let done = ends.iter().cloned().fold(0.0, f64::max) + 2.2;
            for (w, spans) in tracks.iter_mut().enumerate() {
                let f = 7.0 * warm * slow(w);
                let b = 15.0 * warm * slow(w);
                spans.push(span(Phase::Forward, step, t, f, false));
                spans.push(span(Phase::Backward, step, t + f, b, false));
                // buckets become ready during backward; each waits for all workers' copy
                let mut c = t + f + 0.3 * b;
                for k in 0..4 {
                    let ready = (t + f + b * (0.3 + 0.2 * k as f64)).max(c);
                    let start = ready.max(ends[workers - 1] - (4 - k) as f64 * 3.0 * warm);
                    spans.push(span(Phase::AllReduce(k), step, start, 2.6, true));
                    c = start + 2.6;
                }
                spans.push(span(
                    Phase::CommWait,
                    step,
                    t + f + b,
                    done - (t + f + b),
                    false,
                ));
                spans.push(span(Phase::Optimizer, step, done, 1.3, false));
            }
            t = done + 1.3 + 0.1;
        }
        tracks
    }

    /// A small well-formedness check: tags nest, attributes are quoted, text has no raw `<`
    /// or stray `&`.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            for (i, _) in text.match_indices('&') {
                let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;"].contains(&entity),
                    "stray & in {text:?}"
                );
            }
            let close = rest[open..].find('>').expect("unclosed tag") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "`<` inside a tag: {tag:?}");
            assert_eq!(
                tag.matches('"').count() % 2,
                0,
                "unbalanced quotes: {tag:?}"
            );
            let name = tag
                .trim_start_matches('/')
                .split([' ', '/', '\n'])
                .next()
                .unwrap()
                .to_string();
            if let Some(closing) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(closing.trim()), "in {tag:?}");
            } else if !tag.ends_with('/') {
                stack.push(name);
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        assert!(rest.trim().is_empty());
    }

    #[test]
    fn two_workers_get_a_lane_each_and_a_box_per_span() {
        let tracks = vec![
            vec![
                span(Phase::Forward, 0, 0.0, 5.0, false),
                span(Phase::Forward, 1, 10.0, 4.0, false),
                span(Phase::Backward, 1, 14.0, 8.0, false),
                span(Phase::Wait, 1, 22.0, 1.0, false),
                span(Phase::AllReduce(0), 1, 23.0, 2.0, false),
                span(Phase::AllReduce(1), 1, 25.0, 2.0, false),
                span(Phase::Optimizer, 1, 27.0, 1.0, false),
            ],
            vec![
                span(Phase::Forward, 0, 0.0, 6.0, false),
                span(Phase::Forward, 1, 10.0, 4.5, false),
                span(Phase::Backward, 1, 14.5, 8.5, false),
                span(Phase::AllReduce(0), 1, 19.0, 2.0, true),
                span(Phase::AllReduce(1), 1, 23.0, 2.0, true),
                span(Phase::CommWait, 1, 23.0, 2.0, false),
                span(Phase::Optimizer, 1, 27.0, 1.0, false),
            ],
        ];
        let svg = timeline_svg(&tracks);
        assert_well_formed(&svg);
        assert_eq!(svg.matches(r#"class="lane""#).count(), 2, "{svg}");
        assert!(svg.contains(">worker 0</text>") && svg.contains(">worker 1</text>"));
        // worker 1 overlaps: a comm lane; worker 0 does not
        assert_eq!(svg.matches(">comm thread</text>").count(), 1);
        // step 0 is the warm-up and skipped: 12 boxes of step 1
        assert_eq!(svg.matches(r#"class="span""#).count(), 12, "{svg}");
        assert!(svg.contains(">step 1</text>") && !svg.contains(">step 0</text>"));
        for name in [
            "forward",
            "backward",
            "wait for the slowest",
            "all-reduce of bucket b0, b1, ..",
            "waiting for buckets",
            "adamw",
        ] {
            assert!(
                svg.contains(&format!(">{name}</text>")),
                "legend lacks {name}"
            );
        }
        // phases that do not occur are not in the legend
        assert!(!svg.contains(">eval</text>") && !svg.contains(">checkpoint</text>"));
        assert!(svg.contains("all-reduce of bucket 1, step 1, 2.00 ms"));
    }

    #[test]
    fn at_most_max_steps_after_the_first_are_drawn() {
        let svg = timeline_svg(&synthetic(2, 10));
        assert_well_formed(&svg);
        for step in 1..=MAX_STEPS {
            assert!(svg.contains(&format!(">step {step}</text>")), "step {step}");
        }
        assert!(!svg.contains(">step 0</text>"));
        assert!(!svg.contains(&format!(">step {}</text>", MAX_STEPS + 1)));
        assert!(svg.contains(&format!("timeline of steps 1-{MAX_STEPS}, 2 workers")));
        // wide boxes carry their labels; each bucket's all-reduce is named
        assert!(svg.contains(">b3</text>") && svg.contains(">backward</text>"));
    }

    #[test]
    fn no_spans_give_a_valid_svg_that_says_so() {
        for tracks in [vec![], vec![Vec::new(), Vec::new()]] {
            let svg = timeline_svg(&tracks);
            assert_well_formed(&svg);
            assert!(svg.starts_with("<svg") && svg.contains("nothing to draw"));
        }
    }

    #[test]
    fn ticks_are_nice_and_cover_the_range() {
        assert_eq!(
            nice_ticks(40.0),
            [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0]
        );
        let small = nice_ticks(0.9);
        assert_eq!(small.len(), 5, "{small:?}");
        assert!((small[1] - 0.2).abs() < 1e-12, "{small:?}");
        assert_eq!(fmt_ms(2.5), "2.5");
        assert_eq!(fmt_ms(10.0), "10");
    }

    /// Reads a run's `trace.json` back into tracks (thread id 2w: worker w, 2w + 1: its
    /// communication thread), to draw a real run.
    fn tracks_from_chrome_trace(json: &str) -> Vec<Vec<Span>> {
        let doc: serde_json::Value = serde_json::from_str(json).unwrap();
        let mut tracks: Vec<Vec<Span>> = Vec::new();
        for e in doc["traceEvents"].as_array().unwrap() {
            if e["ph"] != "X" {
                continue;
            }
            let name = e["name"].as_str().unwrap();
            let phase = match name {
                "forward" => Phase::Forward,
                "backward" => Phase::Backward,
                "wait" => Phase::Wait,
                "waiting for buckets" => Phase::CommWait,
                "adamw" => Phase::Optimizer,
                "eval" => Phase::Eval,
                "checkpoint" => Phase::Checkpoint,
                "straggler sleep" => Phase::Straggle,
                "fixed-point sum" => Phase::FixedPoint,
                other => match other.strip_prefix("all-reduce bucket ") {
                    Some(b) => Phase::AllReduce(b.parse().unwrap()),
                    None => panic!("unknown span {other}"),
                },
            };
            let tid = e["tid"].as_u64().unwrap() as usize;
            if tracks.len() <= tid / 2 {
                tracks.resize(tid / 2 + 1, Vec::new());
            }
            tracks[tid / 2].push(Span {
                phase,
                step: e["args"]["step"].as_u64().unwrap() as usize,
                start_us: e["ts"].as_f64().unwrap(),
                dur_us: e["dur"].as_f64().unwrap(),
                comm_thread: tid % 2 == 1,
            });
        }
        tracks
    }

    /// Pictures to look at: `TIMELINE_DEMO=1 cargo test --release --lib timeline` writes the
    /// synthetic run to /tmp/timeline-demo.svg; with `TIMELINE_TRACE=runs/x/trace.json` also
    /// that run's timeline to /tmp/timeline-trace.svg.
    #[test]
    fn demo_pictures() {
        if std::env::var_os("TIMELINE_DEMO").is_some() {
            let svg = timeline_svg(&synthetic(4, 8));
            assert_well_formed(&svg);
            std::fs::write("/tmp/timeline-demo.svg", svg).unwrap();
        }
        if let Some(path) = std::env::var_os("TIMELINE_TRACE") {
            let json = std::fs::read_to_string(path).unwrap();
            let svg = timeline_svg(&tracks_from_chrome_trace(&json));
            assert_well_formed(&svg);
            std::fs::write("/tmp/timeline-trace.svg", svg).unwrap();
        }
    }
}
