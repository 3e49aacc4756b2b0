//! `nanodist bench --link A:G`: step time against bucket size, with and without overlap, on
//! a simulated link: the figure of the PyTorch DDP paper (Li et al. 2020, figure 7), here.
//!
//! ```text
//!   for bucket in 25, 100, 400, 1600 KiB and one bucket (all 3.2 MB):
//!     for overlap in off, on:
//!       train --workers 2 --link A:G --bucket-kb S [--overlap], median step time
//!   buckets.svg: step ms against bucket KiB (log2), one line per overlap setting
//!
//!   no overlap: every bucket after backward; small buckets pay an alpha each
//!   overlap:    buckets go out during backward; too large, and the last one starts late
//!               (nothing to overlap it with); too small, and alphas add up
//! ```

use std::path::Path;

use nanodist::collective::Link;
use nanodist::config::TrainConfig;
use nanodist::data::Corpus;
use nanodist::train::{self, RunOptions};
use nanodist::Error;

use crate::plot::{Chart, Series};

/// Bucket sizes of the sweep, KiB (0: one bucket for everything).
const BUCKETS_KB: [usize; 5] = [25, 100, 400, 1600, 0];

/// One point of the sweep.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BucketPoint {
    /// KiB per bucket (0: one bucket).
    pub bucket_kb: usize,
    /// Whether all-reduce overlapped backward.
    pub overlap: bool,
    /// Median step time, ms.
    pub step_ms: f64,
    /// Median communication time (exposed), ms.
    pub comm_ms: f64,
    /// Median time waited out for the link, ms.
    pub link_ms: f64,
}

/// Runs the sweep on `link` with `steps` steps per point and writes `buckets.json` and
/// `buckets.svg` into `dir`.
pub fn sweep(
    base: &TrainConfig,
    corpus: &Corpus,
    link: Link,
    steps: usize,
    dir: &Path,
) -> Result<Vec<BucketPoint>, Error> {
    let mut points = Vec::new();
    println!("bucket size against step time on link {link}, 2 workers, {steps} steps a point:");
    for overlap in [false, true] {
        for kb in BUCKETS_KB {
            let mut cfg = base.clone();
            (cfg.parallel.workers, cfg.parallel.batch) = (2, base.parallel.batch.max(2) / 2 * 2);
            (cfg.parallel.link, cfg.parallel.bucket_kb) = (Some(link), kb);
            cfg.parallel.overlap = overlap;
            (cfg.schedule.steps, cfg.schedule.eval_every) = (steps + 5, 0);
            let opts = RunOptions {
                final_eval: false,
                ..RunOptions::default()
            };
            let init = train::initial_state(&cfg);
            let s = train::train(&cfg, corpus, init, &opts, |_| Ok(()))?.summary;
            let p = BucketPoint {
                bucket_kb: kb,
                overlap,
                step_ms: s.step_ms_median,
                comm_ms: s.comm_ms_median,
                link_ms: s.link_ms_median,
            };
            println!(
                "  bucket {:>6}  overlap {:<5}  step {:>7.1} ms  comm {:>6.1} ms (link {:>6.1})",
                if kb == 0 {
                    "all".into()
                } else {
                    format!("{kb} KiB")
                },
                overlap,
                p.step_ms,
                p.comm_ms,
                p.link_ms
            );
            points.push(p);
        }
    }
    let whole_kb = (base.model.num_params() * 4).div_ceil(1024);
    let kb_of = |p: &BucketPoint| {
        if p.bucket_kb == 0 {
            whole_kb
        } else {
            p.bucket_kb
        }
    };
    let line = |overlap: bool, color| Series {
        name: if overlap { "overlap" } else { "no overlap" }.into(),
        points: (points.iter().filter(|p| p.overlap == overlap))
            .map(|p| ((kb_of(p) as f64).log2(), p.step_ms))
            .collect(),
        color,
        dashed: !overlap,
    };
    let chart = Chart {
        title: format!("step time against bucket size, 2 workers, link {link}"),
        x_label: "log2 of the bucket size, KiB (the largest: one bucket)".into(),
        y_label: "median step, ms".into(),
        series: vec![line(false, "#4e79a7"), line(true, "#e15759")],
        y_from_zero: true,
        ..Chart::default()
    };
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(|e| {
            Error::Config(format!(
                "cannot write {} ({e}): pass --out a directory you can write to",
                dir.join(name).display()
            ))
        })
    };
    write("buckets.svg", chart.to_svg())?;
    write(
        "buckets.json",
        serde_json::to_string_pretty(&points).expect("plain data serialises"),
    )?;
    println!("wrote buckets.svg and buckets.json in {}", dir.display());
    Ok(points)
}
