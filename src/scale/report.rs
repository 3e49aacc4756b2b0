//! A prediction in words: memory, step, throughput, days, failures, then every assumption.
//! The pictures are in [`super::svg`].
//!
//! ```text
//!   GPT-3 175B (174.616G parameters: l=96 a=96 h=12288 s=2048 V=51200)
//!   memory per GPU (first pipeline stage) ... GiB   | step ...                    s   share
//!     weights ... optimizer ... activations  total  |   compute, TP, PP, bubble, DP exposed
//!   throughput, days, reliability table, assumptions
//! ```

use super::memory::GIB;
use super::{fmt_si, PipeSchedule, Prediction};
use std::fmt::Write;

/// A readable breakdown of a prediction: memory, step, throughput, days, failures, assumptions.
pub fn report(p: &Prediction) -> String {
    let c = &p.config;
    let (m, l, t, mem) = (&c.model, &p.layout, &p.time, &p.memory);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} ({} parameters: l={} a={} h={} s={} V={})",
        m.name,
        fmt_si(p.params),
        m.layers,
        m.heads,
        m.hidden,
        m.seq,
        m.vocab
    );
    let _ = writeln!(
        s,
        "on {} x {} ({} per node): DP {} x PP {} x TP {}, ZeRO {}, batch {} = {} replicas x {} micro-batches of {}, recompute {}{}",
        c.gpus,
        c.hardware.name,
        c.gpus_per_node,
        l.dp,
        l.pp,
        l.tp,
        c.zero,
        c.batch,
        l.dp,
        l.micro_batches,
        c.micro_batch,
        if c.recompute { "on" } else { "off" },
        if l.pp > 1 {
            format!(", schedule {}", c.schedule.name())
        } else {
            String::new()
        }
    );
    let gib = |b: f64| b / GIB;
    let _ = writeln!(
        s,
        "\nmemory per GPU (first pipeline stage, {} parameters)      GiB",
        fmt_si(mem.params_per_gpu)
    );
    for (name, b) in [
        ("weights", mem.weights),
        ("gradients", mem.grads),
        ("optimizer state", mem.optimizer),
        ("activations", mem.activations),
    ] {
        let _ = writeln!(s, "  {name:<40} {:>12.2}", gib(b));
    }
    let verdict = if p.fits {
        format!("fits, {:.1} GiB to spare", gib(mem.capacity - mem.total))
    } else {
        format!(
            "DOES NOT FIT: {:.1} GiB over",
            gib(mem.total - mem.capacity)
        )
    };
    let _ = writeln!(
        s,
        "  {:<40} {:>12.2}  of {:.1} GiB: {verdict}",
        "total",
        gib(mem.total),
        gib(mem.capacity)
    );

    let _ = writeln!(
        s,
        "\nstep                                                  s    share"
    );
    // 1F1B and GPipe: (p - 1)/m exactly; zb: the bubble's share of the ideal m t_mb
    let bubble = match c.schedule {
        PipeSchedule::ZeroBubble => format!(
            "pipeline bubble (zb, {:.3} of ideal)",
            t.bubble_s / (t.micro_batch_s * l.micro_batches as f64)
        ),
        PipeSchedule::OneFOneB | PipeSchedule::GPipe => format!(
            "pipeline bubble ({}/{} of ideal)",
            l.pp - 1,
            l.micro_batches
        ),
    };
    let dp = format!(
        "DP exchange exposed ({:.2} s, {:.2} hidden)",
        t.dp_s, t.dp_hidden_s
    );
    let tp = format!("TP all-reduces ({})", t.tp_link);
    let pp = format!("pipeline sends ({})", t.pp_link);
    let compute = format!(
        "compute ({} micro-batches; {:.2} s memory-bound)",
        l.micro_batches, t.elementwise_s
    );
    let sync = format!("synchronisation ({:.0} points)", t.sync_points);
    let mut parts = vec![
        (compute.as_str(), t.compute_s),
        (tp.as_str(), t.tp_s),
        (pp.as_str(), t.pp_s),
        (bubble.as_str(), t.bubble_s),
        (dp.as_str(), t.dp_s - t.dp_hidden_s),
    ];
    // only where partners are priced as waiting for each other (calibrated hardware)
    if t.sync_s > 0.0 {
        parts.push((sync.as_str(), t.sync_s));
    }
    // only where the communication thread shares the workers' cores (calibrated hardware)
    if t.handoff_s > 0.0 {
        parts.push(("hand-offs to the communication thread", t.handoff_s));
    }
    for (name, v) in parts {
        let _ = writeln!(s, "  {name:<46} {v:>9.3} {:>7.1}%", 100.0 * v / t.step_s);
    }
    let _ = writeln!(s, "  {:<46} {:>9.3}", "step", t.step_s);
    let _ = writeln!(
        s,
        "\nthroughput: {} tokens/s, {:.1} TFLOP/s per GPU (recomputation counted), MFU {:.1}%",
        fmt_si(p.tokens_per_s),
        p.tflops_per_gpu,
        100.0 * p.mfu
    );
    let _ = writeln!(
        s,
        "training {} tokens: {:.1} days without failures",
        fmt_si(c.tokens),
        p.days
    );

    let r = &p.reliability;
    let _ = writeln!(
        s,
        "\nreliability: one interruption every {:.1} h; checkpoint in {:.1} s; Young {:.1} min, Daly {:.1} min; goodput {:.1}%",
        r.mtbi_hours,
        r.checkpoint_s,
        r.young_s / 60.0,
        r.daly_s / 60.0,
        100.0 * r.goodput
    );
    let _ = writeln!(s, "  interval (min)   goodput formula   simulated");
    for &(tau, f, sim) in &r.table {
        let _ = writeln!(
            s,
            "  {:>14.1} {:>16.2}% {:>10.2}%",
            tau / 60.0,
            100.0 * f,
            100.0 * sim
        );
    }
    let _ = writeln!(s, "  => {:.1} days with failures", p.days_with_failures);
    let _ = writeln!(s, "\nassumptions:");
    for a in &p.assumptions {
        let _ = writeln!(s, "  - {a}");
    }
    s
}
