//! What a person sees: the progress bar while training, and the summary table after.
//!
//! On a terminal, a bar shows step, loss, tokens/s and the share of time spent
//! communicating and waiting. When stderr is not a terminal (CI, a pipe), the same
//! figures come as one line per evaluation instead, so logs stay readable.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use crate::plot::{Chart, Series};
use nanodist::config::TrainConfig;
use nanodist::data::Corpus;
use nanodist::metrics::{StepRow, Summary};

/// The live view of a run.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Plain lines instead of a bar (stderr is not a terminal).
    lines: bool,
    last_val: Option<f64>,
    /// Exponential moving average of the loss, for a steadier display.
    loss_ema: Option<f64>,
    last: Option<StepRow>,
}

impl Progress {
    /// A bar for the steps `start..cfg.schedule.steps` (hidden when `quiet`).
    pub fn new(cfg: &TrainConfig, start: usize, quiet: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar = ProgressBar::new(cfg.schedule.steps as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:28.cyan/blue}] {pos:>5}/{len} {msg} (eta {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_position(start as u64);
            bar
        });
        Progress {
            bar,
            lines: !quiet && !terminal,
            last_val: None,
            loss_ema: None,
            last: None,
        }
    }

    fn message(&self, row: &StepRow) -> String {
        let total = row.compute_ms + row.comm_ms + row.wait_ms;
        let share = |x: f64| 100.0 * x / total.max(1e-9);
        let val = self
            .last_val
            .map_or(String::new(), |v| format!(" | val {v:.3}"));
        format!(
            "loss {:.3}{val} | {} tok/s | comm {:.0}% wait {:.0}%",
            self.loss_ema.unwrap_or(row.loss),
            thousands(row.tokens_per_s),
            share(row.comm_ms),
            share(row.wait_ms)
        )
    }

    /// A step finished on every worker.
    pub fn step(&mut self, row: &StepRow) {
        self.loss_ema = Some(match self.loss_ema {
            Some(e) => 0.9 * e + 0.1 * row.loss,
            None => row.loss,
        });
        if let Some(bar) = &self.bar {
            bar.set_position(row.step as u64 + 1);
            bar.set_message(self.message(row));
        }
        self.last = Some(row.clone());
    }

    /// A validation loss arrived.
    pub fn eval(&mut self, step: usize, val_loss: f64) {
        self.last_val = Some(val_loss);
        if self.lines {
            if let Some(row) = &self.last {
                eprintln!("step {step:>5}: {}", self.message(row));
            }
        }
    }

    /// Clears the bar.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// `12345.6` -> `"12,346"`.
pub fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The end-of-run table, as printed by `nanodist train`.
pub fn summary_table(s: &Summary) -> String {
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("  {k:<22} {v}\n"));
    row(
        "run",
        format!(
            "{} steps, {} workers, batch {} x {} chars, {} params",
            s.steps,
            s.workers,
            s.global_batch,
            s.block,
            thousands(s.params as f64)
        ),
    );
    let floor = s.floor_nats.map_or(String::new(), |f| {
        format!("  (corpus floor {f:.3}, gap {:.3})", s.val_loss - f)
    });
    row("val loss", format!("{:.4} nats/char{floor}", s.val_loss));
    row("train loss", format!("{:.4} (last 50 steps)", s.train_loss));
    row(
        "speed",
        format!(
            "{} tokens/s, {:.1} ms/step (median)",
            thousands(s.tokens_per_s),
            s.step_ms_median
        ),
    );
    let total = (s.compute_ms_median + s.comm_ms_median + s.wait_ms_median).max(1e-9);
    row(
        "time split",
        format!(
            "compute {:.1} ms ({:.0}%), comm {:.2} ms ({:.1}%), wait {:.2} ms ({:.1}%)",
            s.compute_ms_median,
            100.0 * s.compute_ms_median / total,
            s.comm_ms_median,
            100.0 * s.comm_ms_median / total,
            s.wait_ms_median,
            100.0 * s.wait_ms_median / total
        ),
    );
    for (w, [c, m, wt]) in s.per_worker_ms.iter().enumerate() {
        row(
            &format!("  worker {w}"),
            format!("compute {c:.1} ms, comm {m:.2} ms, wait {wt:.2} ms (means per step)"),
        );
    }
    let mode = if s.deterministic {
        "deterministic (exact fixed-point sums)"
    } else {
        "default (float sums)"
    };
    let overlap = if s.overlap { ", overlapped" } else { "" };
    row("all-reduce", format!("{}{overlap}, {mode}", s.allreduce));
    if let Some(m) = s.memory.as_ref().filter(|m| m.stage > 0) {
        // ZeRO: what each worker holds, against the paper's formula
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let (p, h) = (&m.predicted, &m.measured);
        let lane = m.prefetch.map_or(String::new(), |p| {
            format!("; block gathers, reduce-scatters: {}", p.name())
        });
        row(
            &format!("zero {} / worker", m.stage),
            format!(
                "params {:.1}, grads {:.1}, adamw {:.1}, activations {:.1} MiB \
                 (formula {:.1}, {:.1}, {:.1} MiB){lane}",
                mib(h.params),
                mib(h.grads),
                mib(h.optimizer),
                mib(h.activations),
                mib(p.params),
                mib(p.grads),
                mib(p.optimizer)
            ),
        );
    }
    row(
        "wall time",
        format!("{:.1} s, peak memory {:.0} MiB", s.wall_s, s.peak_rss_mib),
    );
    row("param_hash", s.param_hash.clone());
    out
}

/// `loss.svg`: training loss (smoothed), validation loss, and the corpus floor where known.
pub fn loss_chart(
    corpus: &Corpus,
    rows: &[StepRow],
    evals: &[(usize, f64)],
    val_loss: f64,
    steps: usize,
) -> Chart {
    // Smooth the per-step training loss over a window of 20 steps for readability.
    let smooth: Vec<(f64, f64)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let w = &rows[i.saturating_sub(19)..=i];
            (
                r.step as f64 + 1.0,
                w.iter().map(|r| r.loss).sum::<f64>() / w.len() as f64,
            )
        })
        .collect();
    let mut val: Vec<(f64, f64)> = evals.iter().map(|&(s, l)| (s as f64, l)).collect();
    if val_loss.is_finite() {
        val.push((steps as f64, val_loss)); // an interrupted run has no final evaluation
    }
    let mut series = vec![
        Series {
            name: "train (20-step mean)".into(),
            points: smooth,
            color: "#1f77b4",
            dashed: false,
        },
        Series {
            name: "validation".into(),
            points: val,
            color: "#d62728",
            dashed: false,
        },
    ];
    if let Some(floor) = corpus.floor_nats {
        let x0 = rows.first().map_or(0.0, |r| r.step as f64);
        series.push(Series {
            name: "corpus entropy floor".into(),
            points: vec![(x0, floor), (steps as f64, floor)],
            color: "#555555",
            dashed: true,
        });
    }
    Chart {
        title: format!("nanodist on {}: loss (nats/char)", corpus.name),
        x_label: "step".into(),
        y_label: "cross-entropy, nats/char".into(),
        series,
        y_from_zero: true,
        x_mark: None,
    }
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(28_123_456.0), "28,123,456");
    }
}
