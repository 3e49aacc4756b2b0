//! The timeline: what each worker did and when, as a Chrome trace (`trace.json`).
//!
//! Open `trace.json` in <https://ui.perfetto.dev> or `chrome://tracing`. Each worker
//! has a track (and a second one for its communication thread when all-reduce overlaps
//! backward). A synchronous data-parallel step looks like this:
//!
//! ```text
//! worker 0 | forward | backward |wait|ar b0|ar b1| adamw |
//! worker 1 | forward | backward   |wait|ar b0|ar b1| adamw |   <- a slower worker makes
//!                                  ^ everyone waits here      the others wait
//! ```
//!
//! Spans are recorded by the workers as plain structs (no I/O on the hot path) and
//! written once at the end.

use std::fmt::Write;
use std::time::Instant;

/// What a span of time was spent on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Forward pass (all micro-batches' forwards are separate spans).
    Forward,
    /// Backward pass.
    Backward,
    /// Waiting for the slowest worker before communicating.
    Wait,
    /// One bucket's all-reduce.
    AllReduce(usize),
    /// Blocked after backward until the overlapped all-reduces finish (exposed communication).
    CommWait,
    /// Clipping and the AdamW update.
    Optimizer,
    /// Validation loss evaluation.
    Eval,
    /// Writing a checkpoint.
    Checkpoint,
    /// A sleep injected by `--straggler`.
    Straggle,
    /// Converting per-sequence gradients to fixed point (deterministic mode).
    FixedPoint,
}

impl Phase {
    fn name(self) -> String {
        match self {
            Phase::Forward => "forward".into(),
            Phase::Backward => "backward".into(),
            Phase::Wait => "wait".into(),
            Phase::AllReduce(b) => format!("all-reduce bucket {b}"),
            Phase::CommWait => "waiting for buckets".into(),
            Phase::Optimizer => "adamw".into(),
            Phase::Eval => "eval".into(),
            Phase::Checkpoint => "checkpoint".into(),
            Phase::Straggle => "straggler sleep".into(),
            Phase::FixedPoint => "fixed-point sum".into(),
        }
    }

    fn category(self) -> &'static str {
        match self {
            Phase::AllReduce(_) | Phase::CommWait => "comm",
            Phase::Wait => "wait",
            _ => "compute",
        }
    }
}

/// One interval on one track.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    /// What happened.
    pub phase: Phase,
    /// The optimizer step it belongs to.
    pub step: usize,
    /// Start, in microseconds since the run's clock started.
    pub start_us: f64,
    /// Duration in microseconds.
    pub dur_us: f64,
    /// Set for spans of a worker's communication thread (overlap mode).
    pub comm_thread: bool,
}

/// A shared start time, so that all tracks line up.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    /// Starts the clock now.
    pub fn start() -> Self {
        Clock(Instant::now())
    }

    /// Microseconds since the clock started.
    pub fn now_us(&self) -> f64 {
        self.0.elapsed().as_secs_f64() * 1e6
    }

    /// Records `f` as a span of `phase` into `spans`, returning f's result.
    pub fn time<R>(
        &self,
        spans: &mut Vec<Span>,
        phase: Phase,
        step: usize,
        f: impl FnOnce() -> R,
    ) -> R {
        let start_us = self.now_us();
        let r = f();
        spans.push(Span {
            phase,
            step,
            start_us,
            dur_us: self.now_us() - start_us,
            comm_thread: false,
        });
        r
    }
}

/// Renders the spans of every worker as a Chrome trace JSON document.
///
/// `tracks[w]` holds worker w's spans. Worker w's compute track has thread id `2w`,
/// its communication thread `2w + 1`.
pub fn chrome_trace(tracks: &[Vec<Span>]) -> String {
    let mut out = String::from("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n");
    let mut first = true;
    let mut push = |line: String, out: &mut String| {
        if !first {
            out.push_str(",\n");
        }
        first = false;
        out.push_str(&line);
    };
    for (w, spans) in tracks.iter().enumerate() {
        for (tid, name) in [
            (2 * w, format!("worker {w}")),
            (2 * w + 1, format!("worker {w} comm")),
        ] {
            if tid % 2 == 1 && !spans.iter().any(|s| s.comm_thread) {
                continue;
            }
            push(
                format!(
                    r#"{{"name":"thread_name","ph":"M","pid":0,"tid":{tid},"args":{{"name":"{name}"}}}}"#
                ),
                &mut out,
            );
        }
        for s in spans {
            let tid = 2 * w + usize::from(s.comm_thread);
            let mut line = String::new();
            let _ = write!(
                line,
                r#"{{"name":"{}","cat":"{}","ph":"X","pid":0,"tid":{tid},"ts":{:.1},"dur":{:.1},"args":{{"step":{}}}}}"#,
                s.phase.name(),
                s.phase.category(),
                s.start_us,
                s.dur_us.max(0.0),
                s.step
            );
            push(line, &mut out);
        }
    }
    out.push_str("\n]}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_is_valid_json_with_a_track_per_worker() {
        let span = |phase, start_us, comm_thread| Span {
            phase,
            step: 3,
            start_us,
            dur_us: 10.0,
            comm_thread,
        };
        let tracks = vec![
            vec![
                span(Phase::Forward, 0.0, false),
                span(Phase::AllReduce(1), 5.0, true),
            ],
            vec![span(Phase::Wait, 2.0, false)],
        ];
        let json: serde_json::Value = serde_json::from_str(&chrome_trace(&tracks)).unwrap();
        let events = json["traceEvents"].as_array().unwrap();
        let names: Vec<&str> = events.iter().map(|e| e["name"].as_str().unwrap()).collect();
        // worker 0 (+ comm track), worker 1: 3 name records and 3 spans
        assert_eq!(names.iter().filter(|n| **n == "thread_name").count(), 3);
        assert!(names.contains(&"all-reduce bucket 1"));
        let ar = events
            .iter()
            .find(|e| e["name"] == "all-reduce bucket 1")
            .unwrap();
        assert_eq!(ar["tid"], 1);
        assert_eq!(ar["cat"], "comm");
    }
}
