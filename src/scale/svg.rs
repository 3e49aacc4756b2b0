//! A prediction in pictures ([`step_svg`], [`memory_svg`], [`goodput_svg`]): plain SVG text
//! written by hand, no drawing library, so the crate builds on a bare machine.
//!
//! ```text
//!   step_svg:    stage 0 |####compute####|tp|..bubble..|dp|      one lane per stage, the
//!                stage 1 |.|####compute####|tp|.bubble.|dp|      bubble as the staircase
//!   memory_svg:  layout A |weights|grads|optimizer|act|   :80 GB  one bar per layout
//!   goodput_svg: goodput ^   .-'''-.                             formula line, simulated
//!                        | /        '-.                          dots, Young and Daly marks
//!                        +------------------> checkpoint interval (log)
//! ```

use super::memory::GIB;
use super::reliability::goodput;
use super::{PipeSchedule, Prediction};
use std::fmt::Write;

const W: f64 = 760.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 30.0;
const COMPUTE: &str = "#4e79a7";
const TP: &str = "#f28e2b";
const PP: &str = "#59a14f";
const BUBBLE: &str = "#d3d3d3";
const DP: &str = "#e15759";

fn header(s: &mut String, h: f64, title: &str) {
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        escape(title)
    );
}

fn rect(s: &mut String, x: f64, y: f64, w: f64, h: f64, fill: &str) {
    if w > 0.0 {
        let _ = writeln!(
            s,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}"/>"#
        );
    }
}

fn text(s: &mut String, x: f64, y: f64, anchor: &str, t: &str) {
    let _ = writeln!(
        s,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}">{}</text>"#,
        escape(t)
    );
}

fn legend(s: &mut String, y: f64, items: &[(&str, &str)]) {
    let mut x = LEFT;
    for (name, color) in items {
        rect(s, x, y - 10.0, 12.0, 12.0, color);
        text(s, x + 16.0, y, "start", name);
        x += 26.0 + 7.0 * name.len() as f64;
    }
}

/// A step of the prediction drawn in time: one lane per pipeline stage (up to 8), each idle
/// for its share of the bubble, busy for its m micro-batches (compute, TP all-reduces and
/// pipeline sends in proportion), then the exposed DP exchange; the axis in seconds.
pub fn step_svg(p: &Prediction) -> String {
    let t = &p.time;
    let (pp, mb) = (p.layout.pp, p.layout.micro_batches as f64);
    let lanes = pp.min(8);
    let mut s = String::new();
    let h = 110.0 + 30.0 * lanes as f64;
    header(
        &mut s,
        h,
        &format!(
            "One step of {} on {} GPUs: {:.2} s",
            p.config.model.name, p.config.gpus, t.step_s
        ),
    );
    let pw = W - LEFT - RIGHT;
    let sx = |sec: f64| LEFT + sec / t.step_s * pw;
    // forward share of one micro-batch: 1 of 3 passes, 1 of 4 with recomputation
    let fwd = t.micro_batch_s * if p.config.recompute { 0.25 } else { 1.0 / 3.0 };
    let busy = mb * t.micro_batch_s;
    // the exchange's exposed part and, on shared cores, its hand-offs: both after the backward
    let dp_exposed = t.dp_s - t.dp_hidden_s + t.handoff_s;
    for lane in 0..lanes {
        // with more than 8 stages, draw the first 7 and the last
        let k = if lane == 7 && pp > 8 { pp - 1 } else { lane };
        let y = 40.0 + 30.0 * lane as f64;
        text(&mut s, LEFT - 8.0, y + 15.0, "end", &format!("stage {k}"));
        let start = k as f64 * fwd;
        let mut x = 0.0;
        rect(&mut s, sx(x), y, sx(start) - sx(x), 20.0, BUBBLE);
        x = start;
        for (part, color) in [(t.compute_s, COMPUTE), (t.tp_s, TP), (t.pp_s, PP)] {
            let w = busy * part / (t.compute_s + t.tp_s + t.pp_s);
            rect(&mut s, sx(x), y, sx(x + w) - sx(x), 20.0, color);
            x += w;
        }
        // the pipeline's end: (m + p - 1) slots, or under zb m slots and the shorter bubble
        let end = if p.config.schedule == PipeSchedule::ZeroBubble {
            busy + t.bubble_s
        } else {
            (mb + pp as f64 - 1.0) * t.micro_batch_s
        };
        rect(&mut s, sx(x), y, sx(end) - sx(x), 20.0, BUBBLE);
        rect(&mut s, sx(end), y, sx(end + dp_exposed) - sx(end), 20.0, DP);
    }
    let axis_y = 40.0 + 30.0 * lanes as f64 + 6.0;
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="black"/>"#,
        LEFT + pw
    );
    for i in 0..=5 {
        let sec = t.step_s * i as f64 / 5.0;
        text(
            &mut s,
            sx(sec),
            axis_y + 16.0,
            "middle",
            &format!("{sec:.2} s"),
        );
    }
    legend(
        &mut s,
        h - 16.0,
        &[
            ("compute", COMPUTE),
            ("TP all-reduce", TP),
            ("PP send", PP),
            ("bubble", BUBBLE),
            ("DP exposed", DP),
        ],
    );
    s.push_str("</svg>\n");
    s
}

/// Memory per GPU of several labelled predictions as stacked bars (weights, gradients,
/// optimizer state, activations) against the GPU's memory; a bar past 4x the capacity is
/// squeezed to the edge, its parts in proportion, its total written on it.
pub fn memory_svg(rows: &[(&str, &Prediction)]) -> String {
    let mut s = String::new();
    let h = 100.0 + 34.0 * rows.len() as f64;
    header(&mut s, h, "Memory per GPU, first pipeline stage (GiB)");
    let cap = rows.first().map_or(80e9, |r| r.1.memory.capacity);
    let max = rows
        .iter()
        .map(|r| r.1.memory.total)
        .fold(cap * 1.25, f64::max)
        .min(4.0 * cap);
    let pw = W - LEFT - RIGHT;
    let sx = |b: f64| LEFT + b.min(max) / max * pw;
    for (i, (label, p)) in rows.iter().enumerate() {
        let m = &p.memory;
        let y = 40.0 + 34.0 * i as f64;
        text(&mut s, LEFT - 8.0, y + 16.0, "end", label);
        // a bar past the axis is squeezed to its end, its parts in proportion
        let squeeze = if m.total > max { max / m.total } else { 1.0 };
        let mut x = 0.0;
        for (part, color) in [
            (m.weights, COMPUTE),
            (m.grads, TP),
            (m.optimizer, PP),
            (m.activations, DP),
        ] {
            rect(
                &mut s,
                sx(x),
                y,
                sx(x + part * squeeze) - sx(x),
                22.0,
                color,
            );
            x += part * squeeze;
        }
        let cut = if squeeze < 1.0 { " (not to scale)" } else { "" };
        let note = format!("{:.1} GiB{cut}", m.total / GIB);
        let tx = (sx(m.total) + 4.0).min(LEFT + pw - 170.0);
        text(&mut s, tx, y + 16.0, "start", &note);
    }
    let bottom = 40.0 + 34.0 * rows.len() as f64;
    let cx = sx(cap);
    let _ = writeln!(
        s,
        r##"<line x1="{cx:.1}" y1="32" x2="{cx:.1}" y2="{bottom:.1}" stroke="black" stroke-dasharray="5 4"/>"##
    );
    text(
        &mut s,
        cx + 4.0,
        bottom + 14.0,
        "start",
        &format!("GPU memory {:.1} GiB", cap / GIB),
    );
    legend(
        &mut s,
        h - 16.0,
        &[
            ("weights", COMPUTE),
            ("gradients", TP),
            ("optimizer", PP),
            ("activations", DP),
        ],
    );
    s.push_str("</svg>\n");
    s
}

/// Goodput against the checkpoint interval (log scale): the formula as a line, the seeded
/// simulation as dots, Young's and Daly's intervals as dashed marks.
pub fn goodput_svg(p: &Prediction) -> String {
    let r = &p.reliability;
    let (c, rs, m) = (
        r.checkpoint_s,
        r.assumptions.restart_s,
        r.mtbi_hours * 3600.0,
    );
    let (lo, hi) = (r.table[0].0.ln(), r.table[r.table.len() - 1].0.ln());
    let curve: Vec<(f64, f64)> = (0..=80)
        .map(|i| {
            let tau = (lo + (hi - lo) * i as f64 / 80.0).exp();
            (tau, goodput(tau, c, rs, m))
        })
        .collect();
    let ys = curve.iter().map(|q| q.1).chain(r.table.iter().map(|q| q.2));
    let y_lo = (ys.fold(1.0, f64::min) * 20.0).floor() / 20.0;
    let (ph, top) = (300.0, 40.0);
    let pw = W - LEFT - RIGHT;
    let sx = |tau: f64| LEFT + (tau.ln() - lo) / (hi - lo) * pw;
    let sy = |g: f64| top + ph - (g - y_lo) / (1.0 - y_lo) * ph;
    let mut s = String::new();
    header(
        &mut s,
        420.0,
        &format!(
            "Goodput on {} GPUs: one interruption per {:.1} h, checkpoint {:.0} s",
            p.config.gpus, r.mtbi_hours, c
        ),
    );
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    for i in 0..=4 {
        let g = y_lo + (1.0 - y_lo) * i as f64 / 4.0;
        text(
            &mut s,
            LEFT - 6.0,
            sy(g) + 4.0,
            "end",
            &format!("{:.1}%", 100.0 * g),
        );
    }
    for &(tau, _, _) in r.table.iter().step_by(2) {
        text(
            &mut s,
            sx(tau),
            top + ph + 16.0,
            "middle",
            &format!("{:.0}", tau / 60.0),
        );
    }
    text(
        &mut s,
        LEFT + pw / 2.0,
        top + ph + 34.0,
        "middle",
        "work between checkpoints (minutes, log scale)",
    );
    let pts: Vec<String> = curve
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
        .collect();
    let _ = writeln!(
        s,
        r#"<polyline fill="none" stroke="{COMPUTE}" stroke-width="2" points="{}"/>"#,
        pts.join(" ")
    );
    for &(tau, _, sim) in &r.table {
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{DP}"/>"#,
            sx(tau),
            sy(sim.max(y_lo))
        );
    }
    for (name, tau, dy) in [("Young", r.young_s, 14.0), ("Daly", r.daly_s, 28.0)] {
        let x = sx(tau);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#555555" stroke-dasharray="3 3"/>"##,
            top + ph
        );
        text(
            &mut s,
            x + 4.0,
            top + dy,
            "start",
            &format!("{name} {:.0} min", tau / 60.0),
        );
    }
    legend(
        &mut s,
        405.0,
        &[("formula (Daly 2006)", COMPUTE), ("seeded simulation", DP)],
    );
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
