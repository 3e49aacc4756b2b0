//! Pipeline schedules: the order in which each stage runs its micro-batches' forwards (F)
//! and backwards (B), and under the zero-bubble schedule their weight gradients (W). A
//! schedule is a plain list of [`Action`]s per stage, so it can be printed, tested and
//! replayed without running a model.
//!
//! ```text
//!  GPipe, P = 4, M = 6 (unit time: F and B one slot each; '.' is the bubble)
//!  stage 0 F0 F1 F2 F3 F4 F5  .  .  .  .  .  . B0 B1 B2 B3 B4 B5
//!  stage 1  . F0 F1 F2 F3 F4 F5  .  .  .  . B0 B1 B2 B3 B4 B5
//!  stage 2  .  . F0 F1 F2 F3 F4 F5  .  . B0 B1 B2 B3 B4 B5
//!  stage 3  .  .  . F0 F1 F2 F3 F4 F5 B0 B1 B2 B3 B4 B5
//!
//!  1F1B (PipeDream-flush), P = 4, M = 6: P-1-s warm-up forwards, then one F, one B
//!  stage 0 F0 F1 F2 F3  .  .  . B0 F4 B1 F5 B2  . B3  . B4  . B5
//!  stage 1  . F0 F1 F2  .  . B0 F3 B1 F4 B2 F5 B3  . B4  . B5
//!  stage 2  .  . F0 F1  . B0 F2 B1 F3 B2 F4 B3 F5 B4  . B5
//!  stage 3  .  .  . F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5
//! ```
//!
//! Both run every micro-batch's forward and backward once per stage, and both have the same
//! bubble, (P-1)/(M+P-1) of the step when F and B take the same time on every stage. They
//! differ in memory: a stage keeps a micro-batch's activations from its forward to its
//! backward, M of them at once under GPipe, at most P-s under 1F1B.
//!
//! **Zero bubble** (`zb`, after Qi et al., 2023, "Zero Bubble Pipeline Parallelism"): a
//! backward is two jobs. B, the gradient with respect to the stage's input, is what the
//! previous stage waits for; W, the gradients of the weights, nobody waits for until the
//! update. So `zb` runs 1F1B's order of F and B with B alone, and each W at the latest
//! P-1 micro-batches after its B; a stage whose next F or B would wait for a message runs
//! its oldest pending W instead (the rule the picture simulates, and the pipeline runs).
//! B reaches the previous stage a W sooner, and the drain's idle slots fill with W's: for
//! M >= P the step takes 3M + P - 1 units, the bound of the paper's ZB-H1, (P-1)(F+B-W) of
//! bubble, against 1F1B's 3(M + P - 1). The price: a micro-batch's activations live until
//! its W, up to P-1 micro-batches more than 1F1B, plus the products' output gradients that
//! W reads.
//!
//! ```text
//!  zb, P = 2, M = 6 (unit time: F, B and W one slot each; 1F1B's backward is B + W)
//!  stage 0 F0 F1  . B0 F2 B1 W0 F3 B2 W1 F4 B3 W2 F5 B4 W3 W4 B5 W5
//!  stage 1  . F0 B0 F1 B1 W0 F2 B2 W1 F3 B3 W2 F4 B4 W3 F5 B5 W4 W5
//!  (1F1B in the same units: 21 slots, 3 of them idle on each stage; zb: 19, 1)
//!
//!  zb, P = 4, M = 8: 27 slots (1F1B: 33); only the fill is idle
//!  stage 0 F0 F1 F2 F3  .  .  . B0 F4 B1 F5 B2 F6 B3 W0 F7 B4 W1 W2 B5 W3 W4 B6 W5 W6 B7 W7
//!  stage 1  . F0 F1 F2  .  . B0 F3 B1 F4 B2 F5 B3 W0 F6 B4 W1 F7 B5 W2 W3 B6 W4 W5 B7 W6 W7
//!  stage 2  .  . F0 F1  . B0 F2 B1 F3 B2 F4 B3 W0 F5 B4 W1 F6 B5 W2 F7 B6 W3 W4 B7 W5 W6 W7
//!  stage 3  .  .  . F0 B0 F1 B1 F2 B2 F3 B3 W0 F4 B4 W1 F5 B5 W2 F6 B6 W3 F7 B7 W4 W5 W6 W7
//! ```

use crate::config::PipeSchedule;

/// One unit of a stage's work: micro-batch `m`'s forward, backward or weight gradients
/// through its blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Forward of micro-batch `m`: receive its input, run the blocks, send the output on.
    Forward(usize),
    /// Backward of micro-batch `m`: receive d loss / d output, run the blocks backward,
    /// send d loss / d input back. Under GPipe and 1F1B it also forms the weight gradients;
    /// under `zb` it leaves them to [`Action::Weight`].
    Backward(usize),
    /// The weight gradients of micro-batch `m` (`zb` only): no message in or out; the
    /// micro-batch's activations are free after it.
    Weight(usize),
}

/// Stage `stage`'s actions, in order, under `schedule` with `stages` stages and `micro`
/// micro-batches. Under `zb` a [`Action::Weight`] is the latest point at which that W
/// runs: the stage may run it sooner, in place of waiting (see the module docs).
///
/// ```
/// use nanodist::config::PipeSchedule;
/// use nanodist::parallel::pipeline::schedule::{actions, Action::*};
/// assert_eq!(actions(PipeSchedule::GPipe, 2, 0, 2), [Forward(0), Forward(1), Backward(0), Backward(1)]);
/// assert_eq!(actions(PipeSchedule::OneFOneB, 2, 1, 2), [Forward(0), Backward(0), Forward(1), Backward(1)]);
/// assert_eq!(
///     actions(PipeSchedule::ZeroBubble, 2, 1, 2),
///     [Forward(0), Backward(0), Forward(1), Backward(1), Weight(0), Weight(1)]
/// );
/// ```
pub fn actions(schedule: PipeSchedule, stages: usize, stage: usize, micro: usize) -> Vec<Action> {
    assert!(stage < stages, "stage {stage} of {stages}");
    match schedule {
        PipeSchedule::GPipe => (0..micro)
            .map(Action::Forward)
            .chain((0..micro).map(Action::Backward))
            .collect(),
        PipeSchedule::OneFOneB => {
            // warm-up: enough forwards that the last stage's first backward can start
            let warm = (stages - 1 - stage).min(micro);
            let mut out: Vec<Action> = (0..warm).map(Action::Forward).collect();
            for i in 0..micro - warm {
                out.push(Action::Forward(warm + i));
                out.push(Action::Backward(i));
            }
            out.extend((micro - warm..micro).map(Action::Backward));
            out
        }
        PipeSchedule::ZeroBubble => {
            // 1F1B's order, each B followed by the W of the micro-batch P-1 before it
            let lag = stages - 1;
            let mut out = Vec::with_capacity(3 * micro);
            for a in actions(PipeSchedule::OneFOneB, stages, stage, micro) {
                out.push(a);
                if let Action::Backward(m) = a {
                    if m >= lag {
                        out.push(Action::Weight(m - lag));
                    }
                }
            }
            out.extend((micro.saturating_sub(lag)..micro).map(Action::Weight));
            out
        }
    }
}

/// The most micro-batches whose activations a stage holds at once (from its forward to
/// its backward, or to its weight gradients where the list has them): M under GPipe,
/// min(P - s, M) under 1F1B, min(2P - 1 - s, M) under `zb`.
pub fn max_in_flight(actions: &[Action]) -> usize {
    let split = actions.iter().any(|a| matches!(a, Action::Weight(_)));
    let (mut alive, mut most) = (0usize, 0usize);
    for a in actions {
        match a {
            Action::Forward(_) => {
                alive += 1;
                most = most.max(alive);
            }
            Action::Backward(_) if !split => alive -= 1,
            Action::Backward(_) => {}
            Action::Weight(_) => alive -= 1,
        }
    }
    most
}

/// The bubble of `schedule` when every job takes the same time on every stage: for GPipe
/// and 1F1B the textbook (P-1)/(M+P-1) of the step, whatever the ratio of F to B; for `zb`
/// the idle share of the simulated schedule ([`simulate`]) with F, B and W one unit each
/// (the zero-bubble paper's assumption): (P-1)/(3M+P-1) when M >= P, e.g. 1/19 at P = 2,
/// M = 6.
pub fn theoretical_bubble(schedule: PipeSchedule, stages: usize, micro: usize) -> f64 {
    match schedule {
        PipeSchedule::GPipe | PipeSchedule::OneFOneB => {
            (stages - 1) as f64 / (micro + stages - 1) as f64
        }
        PipeSchedule::ZeroBubble => {
            let slots = slots(schedule, stages, micro);
            let busy = 3 * micro;
            if slots == 0 {
                0.0
            } else {
                1.0 - busy as f64 / slots as f64
            }
        }
    }
}

/// Each stage's actions with their start times, in unit time (every action one unit),
/// as the pipeline runs them: F m on stage s after F m on s-1, B m after B m on s+1 (on the
/// last stage after its own F m), W m after B m on the same stage; and under `zb`, a
/// stage whose next F or B is not ready runs its oldest pending W first.
pub fn simulate(schedule: PipeSchedule, stages: usize, micro: usize) -> Vec<Vec<(usize, Action)>> {
    let lists: Vec<Vec<Action>> = (0..stages)
        .map(|s| actions(schedule, stages, s, micro))
        .collect();
    // the unit time step after which stage s finished that action (MAX: not yet)
    let mut f_done = vec![vec![usize::MAX; micro]; stages];
    let mut b_done = vec![vec![usize::MAX; micro]; stages];
    let mut w_run = vec![vec![false; micro]; stages];
    // the W's stage s may run early: micro-batches next_w[s]..b_count[s]
    let (mut next_w, mut b_count) = (vec![0usize; stages], vec![0usize; stages]);
    let (mut next, mut free) = (vec![0usize; stages], vec![0usize; stages]);
    let mut rows = vec![Vec::new(); stages];
    loop {
        // every stage's next job at its earliest time; the earliest of all runs (ties:
        // the lower stage), so the simulation goes forward in time and a job that is not
        // ready now cannot become ready before the stage's free time
        let mut best: Option<(usize, usize, Action)> = None;
        for s in 0..stages {
            while let Some(&Action::Weight(m)) = lists[s].get(next[s]) {
                if !w_run[s][m] {
                    break;
                }
                next[s] += 1; // ran early
            }
            let Some(&a) = lists[s].get(next[s]) else {
                continue;
            };
            let ready = match a {
                Action::Forward(m) if s > 0 => f_done[s - 1][m],
                Action::Backward(m) if s + 1 < stages => b_done[s + 1][m],
                Action::Backward(m) => f_done[s][m],
                Action::Forward(_) => 0,
                Action::Weight(_) => 0,
            };
            let pending = next_w[s] < b_count[s];
            let job = if (ready == usize::MAX || ready > free[s]) && pending {
                (free[s], s, Action::Weight(next_w[s]))
            } else if ready == usize::MAX {
                continue;
            } else {
                (ready.max(free[s]), s, a)
            };
            if best.is_none_or(|(t, _, _)| job.0 < t) {
                best = Some(job);
            }
        }
        let Some((start, s, a)) = best else { break };
        match a {
            Action::Forward(m) => f_done[s][m] = start + 1,
            Action::Backward(m) => {
                b_done[s][m] = start + 1;
                if schedule == PipeSchedule::ZeroBubble {
                    b_count[s] += 1;
                }
            }
            Action::Weight(m) => {
                w_run[s][m] = true;
                next_w[s] = m + 1;
            }
        }
        if !matches!(a, Action::Weight(_)) {
            next[s] += 1;
        }
        rows[s].push((start, a));
        free[s] = start + 1;
    }
    rows
}

/// The length of the simulated step ([`simulate`]) in unit time: when its last job ends.
pub fn slots(schedule: PipeSchedule, stages: usize, micro: usize) -> usize {
    (simulate(schedule, stages, micro).iter())
        .filter_map(|row| row.last().map(|&(t, _)| t + 1))
        .max()
        .unwrap_or(0)
}

/// The schedule as a picture in unit time steps (every action one unit): one line per
/// stage, `F3`/`B3`/`W3` boxes and `.` for idle slots, as in the module docs
/// ([`simulate`]).
pub fn draw(schedule: PipeSchedule, stages: usize, micro: usize) -> String {
    let mut out = String::new();
    for (s, row) in simulate(schedule, stages, micro).iter().enumerate() {
        let mut cells: Vec<String> = Vec::new();
        for &(start, a) in row {
            while cells.len() < start {
                cells.push(" .".into());
            }
            cells.push(match a {
                Action::Forward(m) => format!("F{m}"),
                Action::Backward(m) => format!("B{m}"),
                Action::Weight(m) => format!("W{m}"),
            });
        }
        let cells: Vec<String> = cells.iter().map(|c| format!("{c:>2}")).collect();
        out += &format!("stage {s} {}\n", cells.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: [PipeSchedule; 2] = [PipeSchedule::GPipe, PipeSchedule::OneFOneB];
    const ALL: [PipeSchedule; 3] = PipeSchedule::ALL;

    /// Every stage runs every micro-batch's forward and backward exactly once (and under
    /// zb its W), each forward before its backward before its W, and each kind in
    /// micro-batch order, the order the neighbouring stages send them in.
    #[test]
    fn every_stage_does_every_forward_before_its_backward() {
        for schedule in ALL {
            let split = schedule == PipeSchedule::ZeroBubble;
            for stages in 1..6 {
                for micro in 1..9 {
                    for s in 0..stages {
                        let a = actions(schedule, stages, s, micro);
                        assert_eq!(a.len(), if split { 3 } else { 2 } * micro);
                        let pos = |x: Action| a.iter().position(|&y| y == x).unwrap();
                        for m in 0..micro {
                            assert!(pos(Action::Forward(m)) < pos(Action::Backward(m)));
                            if split {
                                assert!(pos(Action::Backward(m)) < pos(Action::Weight(m)));
                            }
                            if m > 0 {
                                assert!(pos(Action::Forward(m - 1)) < pos(Action::Forward(m)));
                                assert!(pos(Action::Backward(m - 1)) < pos(Action::Backward(m)));
                                if split {
                                    assert!(pos(Action::Weight(m - 1)) < pos(Action::Weight(m)));
                                }
                            }
                        }
                        // zb's F and B come in 1F1B's order
                        if split {
                            let fb: Vec<Action> = (a.iter().copied())
                                .filter(|x| !matches!(x, Action::Weight(_)))
                                .collect();
                            assert_eq!(fb, actions(PipeSchedule::OneFOneB, stages, s, micro));
                        }
                    }
                }
            }
        }
    }

    /// zb holds up to P-1 micro-batches more than 1F1B (their activations wait for their
    /// W), never more than M.
    #[test]
    fn zero_bubble_holds_p_minus_one_more_than_one_f_one_b() {
        for stages in 1..6 {
            for micro in 1..13 {
                for s in 0..stages {
                    let o = max_in_flight(&actions(PipeSchedule::OneFOneB, stages, s, micro));
                    let z = max_in_flight(&actions(PipeSchedule::ZeroBubble, stages, s, micro));
                    let want = (o + stages - 1).min(micro);
                    assert_eq!(z, want, "P={stages} M={micro} s={s}");
                }
            }
        }
    }

    /// In unit time (F, B and W one slot each, 1F1B's backward being B + W), zb fills the
    /// waits: with M >= P only the fill is idle, P - 1 slots of 3M + P - 1 (ZB-H1's
    /// bound), against 1F1B's 3(P - 1) of 3(M + P - 1); with fewer micro-batches than
    /// stages it still beats 1F1B.
    #[test]
    fn zero_bubble_fills_the_waits() {
        let z = draw(PipeSchedule::ZeroBubble, 2, 6);
        assert_eq!(
            z,
            "stage 0 F0 F1  . B0 F2 B1 W0 F3 B2 W1 F4 B3 W2 F5 B4 W3 W4 B5 W5\n\
             stage 1  . F0 B0 F1 B1 W0 F2 B2 W1 F3 B3 W2 F4 B4 W3 F5 B5 W4 W5\n",
            "{z}"
        );
        for stages in 1..7 {
            for micro in 1..13 {
                let zb = theoretical_bubble(PipeSchedule::ZeroBubble, stages, micro);
                let one = theoretical_bubble(PipeSchedule::OneFOneB, stages, micro);
                let what = format!("P={stages} M={micro}: zb {zb} 1f1b {one}");
                if micro >= stages {
                    let bound = (stages - 1) as f64 / (3 * micro + stages - 1) as f64;
                    assert!((zb - bound).abs() < 1e-12, "{what}");
                }
                assert!(zb < one || stages == 1, "{what}");
            }
        }
    }

    /// GPipe holds all M micro-batches; 1F1B at most P - s (so at most P), and so at most
    /// P/M of GPipe's activations on every stage.
    #[test]
    fn one_f_one_b_holds_at_most_p_micro_batches() {
        for stages in 1..6 {
            for micro in 1..13 {
                for s in 0..stages {
                    let g = max_in_flight(&actions(PipeSchedule::GPipe, stages, s, micro));
                    let o = max_in_flight(&actions(PipeSchedule::OneFOneB, stages, s, micro));
                    assert_eq!(g, micro);
                    assert_eq!(o, (stages - s).min(micro), "P={stages} M={micro} s={s}");
                    assert!(o * micro <= g * stages);
                }
            }
        }
    }

    /// In unit time, both schedules take M + P - 1 slots of F and of B: the bubble formula.
    #[test]
    fn the_drawn_schedules_have_the_textbook_bubble() {
        for schedule in BOTH {
            for (stages, micro) in [(2, 2), (2, 6), (4, 4), (4, 8), (3, 5)] {
                let picture = draw(schedule, stages, micro);
                let longest = picture.lines().map(|l| l.split_whitespace().count() - 2);
                let slots = longest.max().unwrap();
                assert_eq!(slots, 2 * (micro + stages - 1), "{schedule:?}\n{picture}");
            }
        }
        let g = draw(PipeSchedule::GPipe, 2, 2);
        assert_eq!(
            g, "stage 0 F0 F1  .  . B0 B1\nstage 1  . F0 F1 B0 B1\n",
            "{g}"
        );
    }

    /// The dependencies never deadlock: each stage's list can be run to the end.
    #[test]
    fn schedules_never_deadlock() {
        for schedule in ALL {
            let jobs = if schedule == PipeSchedule::ZeroBubble {
                3
            } else {
                2
            };
            for stages in 1..6 {
                for micro in 1..9 {
                    let picture = draw(schedule, stages, micro);
                    let boxes = picture.matches(['F', 'B', 'W']).count();
                    assert_eq!(boxes, jobs * stages * micro, "{picture}");
                }
            }
        }
    }
}
