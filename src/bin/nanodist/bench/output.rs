//! How `nanodist bench` shows a sweep: a line per point as it is measured, the Markdown table,
//! and `scaling.svg` (tokens/s and efficiency against threads, with the ideal lines).

use super::point::Point;
use crate::plot::{Chart, Series};
use crate::report::thousands;

/// One line as a point is measured, so a long sweep shows progress.
pub(super) fn print_point(p: &Point) {
    let workers = if p.worker_step_ms.len() > 1 {
        let ms: Vec<String> = p.worker_step_ms.iter().map(|t| format!("{t:.1}")).collect();
        format!(" (each worker's mean step: {} ms)", ms.join(", "))
    } else {
        String::new()
    };
    println!(
        "  {:<11} {:>2} threads, batch {:>3}: {:>7} tokens/s, {:6.1} ms/step{workers}",
        p.mode,
        p.workers,
        p.batch,
        thousands(p.tokens_per_s),
        p.step_ms
    );
}

/// The sweep as a Markdown table. An oversubscribed point says how many threads took turns
/// on how many cores, and adds its efficiency against what those cores can deliver.
pub fn table(points: &[Point]) -> String {
    let mut out = String::from(
        "| mode | threads | batch | tokens/s | ms/step | efficiency | compute ms | comm ms (predicted) | wait ms | MFU |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in points {
        out.push_str(&format!(
            "| {} | {}{} | {} | {} | {:.1} | {:.0}%{} | {:.1} | {:.2} ({:.2}) | {:.2} | {:.0}% |\n",
            p.mode,
            p.workers,
            if p.oversubscribed {
                format!(
                    " (oversubscribed: {} threads on {} cores)",
                    p.workers, p.cores
                )
            } else {
                String::new()
            },
            p.batch,
            thousands(p.tokens_per_s),
            p.step_ms,
            100.0 * p.efficiency,
            if p.oversubscribed && p.efficiency.is_finite() {
                format!(
                    " ({:.0}% of {} cores)",
                    100.0 * p.efficiency_of_cores(),
                    p.cores
                )
            } else {
                String::new()
            },
            p.compute_ms,
            p.comm_ms,
            p.predicted_comm_ms,
            p.wait_ms,
            100.0 * p.mfu
        ));
    }
    if points.iter().any(|p| p.tokens_per_s_rounds.len() > 1) {
        out.push_str("\ntokens/s of each round (the table shows the fastest):\n");
        for p in points {
            let rounds: Vec<String> = p
                .tokens_per_s_rounds
                .iter()
                .map(|&t| thousands(t))
                .collect();
            out.push_str(&format!(
                "  {:<11} {:>2} threads: {}\n",
                p.mode,
                p.workers,
                rounds.join(", ")
            ));
        }
    }
    out
}

/// The sweep's lessons in words, for each worker count past 1:
/// - with a strong-scaling point, its efficiency, its share of the independent mode's
///   throughput (what synchronising cost, with the all-reduce and the wait that make it up),
///   and its ratio to op parallelism at as many threads. A gap to independent much wider than
///   the all-reduce and the wait explain is the host's speed moving between the two
///   measurements: more `--rounds` narrow it;
/// - the two costs that no all-reduce removes, when the sweep holds what shows them: how much
///   slower a worker computes its fixed share with N threads busy than alone (weak scaling
///   against its one worker: cores sharing caches, memory and clocks, or, oversubscribed,
///   threads sharing cores), and the spread of the independent workers' mean steps, the
///   slowest of which a synchronous step waits for.
pub(super) fn lessons(points: &[Point]) -> String {
    let find = |mode: &str, n: usize| points.iter().find(|p| p.mode == mode && p.workers == n);
    let mut counts: Vec<usize> = points
        .iter()
        .map(|p| p.workers)
        .filter(|&n| n > 1)
        .collect();
    counts.sort_unstable();
    counts.dedup();
    let mut out = String::new();
    for n in counts {
        if let Some(strong) = find("strong", n) {
            let (ind, op) = (find("independent", n), find("op-parallel", n));
            out.push_str(&synchronising(strong, ind, op));
        }
        out.push_str(&costs(
            n,
            find("weak", 1),
            find("weak", n),
            find("independent", n),
        ));
        out.push_str(&round_ratios(points, n));
    }
    if out.is_empty() {
        out
    } else {
        format!("What the sweep says:\n{out}")
    }
}

/// The line of [`lessons`] that compares the modes at `n` threads with one worker round by
/// round: each round measured every point one after the other, so the ratio of two points
/// of the same round sees the host in about the same state, and the median of those ratios
/// resists a round the host slowed down. Empty with a single round.
///
/// ```text
///   round r:   ratio_r = tokens/s (mode, n threads, round r) / tokens/s (strong, 1, round r)
///   reported:  median over r, then each ratio_r in round order
/// ```
fn round_ratios(points: &[Point], n: usize) -> String {
    let Some(one) = points.iter().find(|p| p.mode == "strong" && p.workers == 1) else {
        return String::new();
    };
    let modes = [
        "strong",
        "tensor-parallel",
        "tensor-parallel-sp",
        "op-parallel",
    ];
    let mut parts = Vec::new();
    for mode in modes {
        let Some(p) = points.iter().find(|p| p.mode == mode && p.workers == n) else {
            continue;
        };
        let ratios: Vec<f64> = (p.tokens_per_s_rounds.iter())
            .zip(&one.tokens_per_s_rounds)
            .map(|(&t, &t1)| t / t1)
            .collect();
        if ratios.len() < 2 {
            continue;
        }
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        };
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        parts.push(format!("{mode} {median:.2}x ({})", each.join(", ")));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(
            "  {n} workers against one worker, median of the per-round ratios (each round's): {}\n",
            parts.join("; ")
        )
    }
}

/// The line of [`lessons`] on strong scaling at one worker count.
fn synchronising(strong: &Point, independent: Option<&Point>, op: Option<&Point>) -> String {
    let n = strong.workers;
    let mut out = format!(
        "  {n} workers{}: strong scaling delivered {:.0}% of {n} x one worker",
        if strong.oversubscribed {
            " (oversubscribed)"
        } else {
            ""
        },
        100.0 * strong.efficiency
    );
    if let Some(ind) = independent {
        out.push_str(&format!(
            "; {:.0}% of independent workers that never synchronise (all-reduce {:.2} ms \
             and wait {:.2} ms, {:.0}% of a {:.1} ms step)",
            100.0 * strong.tokens_per_s / ind.tokens_per_s,
            strong.comm_ms,
            strong.wait_ms,
            100.0 * (strong.comm_ms + strong.wait_ms) / strong.step_ms,
            strong.step_ms
        ));
    }
    if let Some(op) = op {
        out.push_str(&format!(
            "; {:.2}x op parallelism on {n} threads",
            strong.tokens_per_s / op.tokens_per_s
        ));
    }
    out.push('\n');
    // without a one-worker point there is no efficiency to state
    if strong.oversubscribed && strong.efficiency.is_finite() {
        out.push_str(&format!(
            "  {n} workers are {n} threads taking turns on {} cores: {:.0}% of what {} cores \
             deliver ({} x one worker)\n",
            strong.cores,
            100.0 * strong.efficiency_of_cores(),
            strong.cores,
            strong.cores
        ));
    }
    out
}

/// The line of [`lessons`] on the costs at `n` workers that no all-reduce removes, or nothing
/// when the sweep lacks the points that show them.
fn costs(
    n: usize,
    weak_one: Option<&Point>,
    weak: Option<&Point>,
    independent: Option<&Point>,
) -> String {
    let mut parts = Vec::new();
    if let (Some(one), Some(weak)) = (weak_one, weak) {
        let slower = weak.compute_ms / one.compute_ms;
        let why = if slower < 1.0 {
            "faster than alone, so the host's speed moved between the two"
        } else if weak.oversubscribed {
            "threads sharing cores"
        } else {
            "the cores slowing one another"
        };
        parts.push(format!(
            "weak scaling's workers computed their {} sequences each in {:.1} ms a step \
             against {:.1} ms for one worker alone ({slower:.2}x: {why})",
            weak.batch / n,
            weak.compute_ms,
            one.compute_ms,
        ));
    }
    if let Some(ind) = independent.filter(|p| p.worker_step_ms.len() > 1) {
        let lo = ind.worker_step_ms.iter().cloned().fold(f64::MAX, f64::min);
        let hi = ind.worker_step_ms.iter().cloned().fold(f64::MIN, f64::max);
        parts.push(format!(
            "independent workers' mean steps ran {lo:.1}-{hi:.1} ms, and a synchronous step \
             waits for the slowest"
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(
            "  {n} workers, the costs no all-reduce removes: {}\n",
            parts.join("; ")
        )
    }
}

/// Two stacked charts, tokens/s and efficiency against threads: one line per mode beside the
/// ideal, and the core count in the title (threads past it are oversubscribed).
pub(super) fn scaling_svg(points: &[Point], cores: usize) -> String {
    let colors = [
        ("strong", "strong (data parallel)", "#1f77b4"),
        ("weak", "weak (data parallel)", "#2ca02c"),
        ("independent", "independent (no all-reduce)", "#9467bd"),
        ("op-parallel", "op parallel", "#d62728"),
        ("tensor-parallel", "tensor parallel", "#ff7f0e"),
        ("tensor-parallel-sp", "tensor parallel + sp", "#8c564b"),
    ];
    let series_of = |value: fn(&Point) -> f64| -> Vec<Series> {
        colors
            .iter()
            .map(|&(mode, label, color)| Series {
                name: label.into(),
                points: points
                    .iter()
                    .filter(|p| p.mode == mode)
                    .map(|p| (p.workers as f64, value(p)))
                    .collect(),
                color,
                dashed: false,
            })
            .filter(|s| !s.points.is_empty())
            .collect()
    };
    let mut tps = series_of(|p| p.tokens_per_s);
    if let Some(one) = points.iter().find(|p| p.mode == "strong" && p.workers == 1) {
        let max = points.iter().map(|p| p.workers).max().unwrap_or(1) as f64;
        tps.push(Series {
            name: "ideal (N x 1 worker)".into(),
            points: vec![(1.0, one.tokens_per_s), (max, max * one.tokens_per_s)],
            color: "#777777",
            dashed: true,
        });
    }
    let mut eff = series_of(|p| 100.0 * p.efficiency);
    let max = points.iter().map(|p| p.workers).max().unwrap_or(1) as f64;
    eff.push(Series {
        name: "ideal".into(),
        points: vec![(1.0, 100.0), (max, 100.0)],
        color: "#777777",
        dashed: true,
    });
    // past the core count the threads take turns on the cores: mark where that starts
    let x_mark = (max > cores as f64).then(|| (cores as f64, format!("{cores} cores")));
    let x_label = match x_mark {
        Some(_) => "threads (right of the dotted line: oversubscribed)",
        None => "threads",
    };
    let top = Chart {
        title: format!("tokens/s against threads ({cores} cores)"),
        x_label: x_label.into(),
        y_label: "tokens/s".into(),
        series: tps,
        y_from_zero: true,
        x_mark: x_mark.clone(),
    };
    let bottom = Chart {
        title: "scaling efficiency".into(),
        x_label: x_label.into(),
        y_label: "% of ideal".into(),
        series: eff,
        y_from_zero: true,
        x_mark,
    };
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"880\">\n<svg y=\"0\">{}</svg>\n<svg y=\"440\">{}</svg>\n</svg>\n",
        top.to_svg(),
        bottom.to_svg()
    )
}
