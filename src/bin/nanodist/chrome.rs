//! `trace.json`: the workers' spans as a Chrome trace, for <https://ui.perfetto.dev> or
//! `chrome://tracing`.
//!
//! ```text
//!   {"traceEvents": [ {"name":"thread_name","ph":"M","tid":0,..},        worker 0's track
//!                     {"name":"forward","cat":"compute","ph":"X","tid":0,"ts":..,"dur":..},
//!                     {"name":"all-reduce bucket 0","cat":"comm","tid":1,..}, its comm thread
//!                     ... ]}
//! ```

use std::fmt::Write;

use nanodist::trace::Span;

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
    use nanodist::trace::Phase;

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
