//! Pipeline schedules: the order in which each stage runs its micro-batches' forwards (F)
//! and backwards (B). A schedule is a plain list of [`Action`]s per stage, so it can be
//! printed, tested and replayed without running a model.
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

use crate::config::PipeSchedule;

/// One unit of a stage's work: micro-batch `m`'s forward or backward through its blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Forward of micro-batch `m`: receive its input, run the blocks, send the output on.
    Forward(usize),
    /// Backward of micro-batch `m`: receive d loss / d output, run the blocks backward,
    /// send d loss / d input back.
    Backward(usize),
}

/// Stage `stage`'s actions, in order, under `schedule` with `stages` stages and `micro`
/// micro-batches.
///
/// ```
/// use nanodist::config::PipeSchedule;
/// use nanodist::parallel::pipeline::schedule::{actions, Action::*};
/// assert_eq!(actions(PipeSchedule::GPipe, 2, 0, 2), [Forward(0), Forward(1), Backward(0), Backward(1)]);
/// assert_eq!(actions(PipeSchedule::OneFOneB, 2, 1, 2), [Forward(0), Backward(0), Forward(1), Backward(1)]);
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
    }
}

/// The most micro-batches whose activations a stage holds at once (forward run, backward
/// not yet): M under GPipe, min(P - s, M) under 1F1B.
pub fn max_in_flight(actions: &[Action]) -> usize {
    let (mut alive, mut most) = (0usize, 0usize);
    for a in actions {
        match a {
            Action::Forward(_) => {
                alive += 1;
                most = most.max(alive);
            }
            Action::Backward(_) => alive -= 1,
        }
    }
    most
}

/// The bubble of a pipeline whose forward and backward take the same time on every stage:
/// (P-1)/(M+P-1) of the step is idle on each stage (the fill and the drain).
pub fn theoretical_bubble(stages: usize, micro: usize) -> f64 {
    (stages - 1) as f64 / (micro + stages - 1) as f64
}

/// The schedule as a picture in unit time steps (F and B one unit each): one line per
/// stage, `F3`/`B3` boxes and `.` for idle slots, as in the module docs. Simulated with the
/// pipeline's dependencies: F m on stage s after F m on s-1, B m after B m on s+1.
pub fn draw(schedule: PipeSchedule, stages: usize, micro: usize) -> String {
    let lists: Vec<Vec<Action>> = (0..stages)
        .map(|s| actions(schedule, stages, s, micro))
        .collect();
    // finish[s][(kind, m)]: the unit time step after which stage s finished that action
    let mut f_done = vec![vec![usize::MAX; micro]; stages];
    let mut b_done = vec![vec![usize::MAX; micro]; stages];
    let (mut next, mut free) = (vec![0usize; stages], vec![0usize; stages]);
    let mut rows = vec![Vec::<String>::new(); stages];
    let total = 2 * micro * stages;
    for _ in 0..total {
        // every stage whose next action is ready starts it at its earliest time; take the
        // earliest start of all (ties: lower stage) so that the simulation is in time order
        let mut best: Option<(usize, usize)> = None;
        for s in 0..stages {
            let Some(&a) = lists[s].get(next[s]) else {
                continue;
            };
            let ready = match a {
                Action::Forward(m) if s > 0 => f_done[s - 1][m],
                Action::Backward(m) if s + 1 < stages => b_done[s + 1][m],
                Action::Backward(m) => f_done[s][m],
                Action::Forward(_) => 0,
            };
            if ready == usize::MAX {
                continue;
            }
            let start = ready.max(free[s]);
            if best.is_none_or(|(t, _)| start < t) {
                best = Some((start, s));
            }
        }
        let Some((start, s)) = best else { break };
        let a = lists[s][next[s]];
        next[s] += 1;
        while rows[s].len() < start {
            rows[s].push(" .".into());
        }
        let (label, done) = match a {
            Action::Forward(m) => (format!("F{m}"), &mut f_done[s][m]),
            Action::Backward(m) => (format!("B{m}"), &mut b_done[s][m]),
        };
        rows[s].push(format!("{label:>2}"));
        *done = start + 1;
        free[s] = start + 1;
    }
    let mut out = String::new();
    for (s, row) in rows.iter().enumerate() {
        out += &format!("stage {s} {}\n", row.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: [PipeSchedule; 2] = [PipeSchedule::GPipe, PipeSchedule::OneFOneB];

    /// Every stage runs every micro-batch's forward and backward exactly once, each forward
    /// before its backward, and forwards (and backwards) in micro-batch order, the order
    /// the neighbouring stages send them in.
    #[test]
    fn every_stage_does_every_forward_before_its_backward() {
        for schedule in BOTH {
            for stages in 1..6 {
                for micro in 1..9 {
                    for s in 0..stages {
                        let a = actions(schedule, stages, s, micro);
                        assert_eq!(a.len(), 2 * micro);
                        let pos = |x: Action| a.iter().position(|&y| y == x).unwrap();
                        for m in 0..micro {
                            assert!(pos(Action::Forward(m)) < pos(Action::Backward(m)));
                            if m > 0 {
                                assert!(pos(Action::Forward(m - 1)) < pos(Action::Forward(m)));
                                assert!(pos(Action::Backward(m - 1)) < pos(Action::Backward(m)));
                            }
                        }
                    }
                }
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
        for schedule in BOTH {
            for stages in 1..6 {
                for micro in 1..9 {
                    let picture = draw(schedule, stages, micro);
                    let boxes = picture.matches(['F', 'B']).count();
                    assert_eq!(boxes, 2 * stages * micro, "{picture}");
                }
            }
        }
    }
}
