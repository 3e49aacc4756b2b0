//! A property test of the whole program: whatever a person types, nanodist ends cleanly.
//!
//! A seeded generator writes command lines for `train`, `sample`, `allreduce`, `bench` and
//! `scale` (where the tree has it):
//! valid values, zero, negative, huge and empty ones, words where numbers go, and odd paths
//! (spaces and unicode in names, missing files, a directory, `/dev/null`, `/dev/zero`, a FIFO
//! with no writer, a tiny file, a trained run). Each one runs the built binary in a scratch
//! directory of its own, and the test asserts:
//!
//! ```text
//!   exit status      0, 1 or 2: never 101 (a panic), never a signal
//!   stderr           no "panicked"; a failing run prints exactly one line
//!   time             ends within HANG_S, unless its line asks for long work on purpose
//!                    (--steps 10^19 is a valid, long run): that one is stopped after LONG_S
//!   run directories  one with summary.json also holds checkpoint.safetensors and config.json
//! ```
//!
//! The seed is fixed; vary it with `NANODIST_HOSTILE_SEED=7`, and the number of command lines
//! with `NANODIST_HOSTILE_CASES=200`. A failure prints the seed and each failing command.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{TempDir, BIN};

/// A run that asks for nothing long and is still going after this is taken for a hang.
const HANG_S: u64 = 30;
/// A run that asks for long work on purpose is stopped after this; it counts as fine.
const LONG_S: u64 = 2;

/// SplitMix64: a few lines, good enough to pick flags, and the same on every machine.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// A value for a flag, and whether it asks for long (but valid) work.
type Value = (&'static str, bool);

const HUGE: &str = "18446744073709551615";
const OVER: &str = "99999999999999999999999";
const JUNK: [Value; 5] = [
    ("", false),
    ("-1", false),
    ("abc", false),
    (OVER, false),
    ("1.5", false),
];

/// Paths every command may be handed where it wants a file or a directory. `@NAME` is the
/// fixture NAME (made once, read-only to the cases); `@RUN` is a fresh copy of the trained
/// run in the case's own directory, so a case may resume it.
const PATHS: [Value; 16] = [
    ("@tiny.txt", false),
    ("@short.txt", false),
    ("@latin1.txt", false),
    ("@cut.txt", false),
    ("@binary.bin", false),
    ("@dir", false),
    ("@fifo", false),
    ("@tiny.txt/below", false),
    ("@with space ü.txt", false),
    ("@run", false),
    ("@RUN", false),
    ("/dev/null", false),
    ("/dev/zero", false),
    ("missing/nope.txt", false),
    ("out dir ü", false),
    ("", false),
];

/// The flags of each command: name, values (an empty list: a switch). Any value may also
/// be replaced by one of `JUNK`.
#[rustfmt::skip]
fn flags(command: &str) -> Vec<(&'static str, Vec<Value>)> {
    let n = |vals: &[Value]| vals.to_vec();
    let paths = PATHS.to_vec();
    // where a command writes, the shared trained run is replaced by a copy of its own (@RUN)
    let writable: Vec<Value> = PATHS.iter().filter(|p| p.0 != "@run").copied().collect();
    let data = [&PATHS[..], &[("tales", false)]].concat();
    match command {
        "train" => vec![
            ("--data", data),
            ("--workers", n(&[("1", false), ("2", false), ("3", false), ("0", false), (HUGE, false)])),
            ("--steps", n(&[("1", false), ("3", false), ("0", false), (HUGE, true)])),
            ("--batch", n(&[("2", false), ("4", false), ("6", false), ("0", false), (HUGE, false)])),
            ("--block", n(&[("4", false), ("0", false), ("65537", false), (HUGE, false), ("512", true)])),
            ("--layers", n(&[("1", false), ("2", false), ("0", false), ("4097", false), (HUGE, false)])),
            ("--heads", n(&[("1", false), ("2", false), ("3", false), ("0", false), (HUGE, false)])),
            ("--embd", n(&[("16", false), ("7", false), ("0", false), ("65536", false), (HUGE, false)])),
            ("--lr", n(&[("0.001", false), ("0", false), ("nan", false), ("inf", false), ("1e30", false)])),
            ("--accum", n(&[("1", false), ("2", false), ("0", false), (HUGE, false)])),
            ("--seed", n(&[("0", false), (HUGE, false)])),
            ("--allreduce", n(&[("ring", false), ("tree", false), ("naive", false), ("shared", false), ("fast", false)])),
            ("--bucket-kb", n(&[("0", false), ("1", false), (HUGE, false)])),
            ("--overlap", vec![]),
            ("--deterministic", vec![]),
            ("--eval-every", n(&[("0", false), ("1", false), (HUGE, false)])),
            ("--checkpoint-every", n(&[("0", false), ("1", false), (HUGE, false)])),
            ("--check-replicas", n(&[("0", false), ("1", false), (HUGE, false)])),
            ("--out", writable.clone()),
            ("--resume", writable),
            ("--straggler", n(&[("0:1", false), ("0:60000", true), ("0:60001", false), ("1:18446744073709551615", false), ("9:1", false), ("0:-5", false), (":", false)])),
            ("--fault", n(&[("0:0", false), ("0:1", false), ("5:1", false), ("0:18446744073709551615", false), ("x", false)])),
            ("--quiet", vec![]),
        ],
        "sample" => vec![
            ("--run", paths),
            ("--prompt", n(&[("Once", false), ("ü€ unknown", false), ("a b c d e f g h", false)])),
            ("--chars", n(&[("0", false), ("1", false), ("30", false), ("1000000", true), ("1000001", false), (HUGE, false)])),
            ("--temperature", n(&[("0", false), ("0.8", false), ("1e-30", false), ("1e30", false), ("nan", false), ("inf", false)])),
            ("--seed", n(&[("0", false), (HUGE, false)])),
        ],
        "allreduce" => vec![
            ("--workers", n(&[("1", false), ("2", false), ("3", false), ("0", false), ("64", true), ("1025", false), (HUGE, false)])),
            ("--floats", n(&[("1", false), ("7", false), ("1000", false), ("0", false), ("1073741824", true), (HUGE, false)])),
            ("--algo", n(&[("all", false), ("ring", false), ("tree", false), ("naive", false), ("shared", false), ("fast", false)])),
            ("--iters", n(&[("1", false), ("2", false), ("0", false), ("10000", true), ("10001", false), (HUGE, false)])),
            ("--json", vec![]),
        ],
        "bench" => vec![
            ("--workers", n(&[("1", false), ("1,2", false), ("0", false), ("1,1", false), ("2048", true), (HUGE, false)])),
            ("--steps", n(&[("1", false), ("0", false), (HUGE, true)])),
            ("--batch", n(&[("2", false), ("0", false), (HUGE, false)])),
            ("--per-worker", n(&[("1", false), ("0", false), (HUGE, false)])),
            ("--rounds", n(&[("1", false), ("0", false), (HUGE, true)])),
            ("--allreduce", n(&[("ring", false), ("fast", false)])),
            ("--data", data),
            ("--out", writable),
        ],
        // the cost model's command where the tree has it (a tree without it answers 2)
        "scale" => vec![
            ("--model", n(&[("tiny", false), ("gpt2", false), ("gpt3", false), ("gpt9", false)])),
            ("--layers", n(&[("1", false), ("96", false), ("0", false), (HUGE, false)])),
            ("--heads", n(&[("1", false), ("96", false), ("0", false), ("7", false), (HUGE, false)])),
            ("--embd", n(&[("16", false), ("12288", false), ("0", false), (HUGE, false)])),
            ("--block", n(&[("1", false), ("2048", false), ("0", false), (HUGE, false)])),
            ("--vocab", n(&[("1", false), ("50257", false), ("0", false), (HUGE, false)])),
            ("--gpu", n(&[("a100", false), ("h100", false), ("tpu", false)])),
            ("--gpus", n(&[("1", false), ("1024", false), ("1000", false), ("0", false), (HUGE, false)])),
            ("--gpus-per-node", n(&[("1", false), ("8", false), ("3", false), ("0", false), (HUGE, false)])),
            ("--tp", n(&[("1", false), ("8", false), ("0", false), (HUGE, false)])),
            ("--pp", n(&[("1", false), ("8", false), ("0", false), (HUGE, false)])),
            ("--zero", n(&[("0", false), ("3", false), ("4", false), (HUGE, false)])),
            ("--micro-batch", n(&[("1", false), ("0", false), (HUGE, false)])),
            ("--batch", n(&[("1", false), ("1536", false), ("0", false), (HUGE, false)])),
            ("--recompute", n(&[("on", false), ("off", false), ("maybe", false)])),
            ("--tokens", n(&[("300e9", false), ("0", false), ("-1", false), ("inf", false), ("nan", false), ("1e300", false)])),
            ("--json", vec![]),
            ("--out", writable),
            ("--calibrate", vec![]),
        ],
        _ => unreachable!(),
    }
}

/// What every command line of a command starts from, so that a valid line is short work:
/// a tiny model on a tiny file for a few steps. Generated flags replace these.
#[rustfmt::skip]
fn baseline(command: &str) -> &'static [(&'static str, &'static str)] {
    match command {
        "train" => &[
            ("--data", "@tiny.txt"), ("--steps", "2"), ("--layers", "1"), ("--heads", "2"),
            ("--embd", "16"), ("--block", "8"), ("--batch", "2"), ("--eval-every", "0"),
        ],
        "sample" => &[("--run", "@run"), ("--chars", "20")],
        "allreduce" => &[("--iters", "1"), ("--floats", "1000")],
        "scale" => &[],
        "bench" => &[
            ("--data", "@tiny.txt"), ("--workers", "1"), ("--steps", "1"), ("--batch", "2"),
            ("--per-worker", "1"),
        ],
        _ => unreachable!(),
    }
}

/// One generated command line: its words (with `@` fixtures still unresolved) and whether
/// it asks for long work on purpose.
struct Case {
    words: Vec<String>,
    long: bool,
}

fn generate(g: &mut Gen) -> Case {
    // bench times real work even for one step: it is drawn less often
    let command = *g.pick(&[
        "train",
        "train",
        "train",
        "sample",
        "sample",
        "allreduce",
        "allreduce",
        "bench",
        "scale",
    ]);
    let mut words = vec![command.to_string()];
    let mut long = false;
    let mut chosen: Vec<(&str, Option<Value>)> = Vec::new();
    for (flag, values) in flags(command) {
        if g.chance(0.2) {
            // junk in one value of eight: more, and nearly every line would stop at parsing
            let junk = g.chance(0.12);
            let value =
                (!values.is_empty()).then(|| *g.pick(if junk { &JUNK[..] } else { &values }));
            chosen.push((flag, value));
        }
    }
    for &(flag, value) in baseline(command) {
        if !chosen.iter().any(|c| c.0 == flag) && !g.chance(0.05) {
            chosen.push((flag, Some((value, false))));
        } else if flag == "--steps" && !chosen.iter().any(|c| c.0 == flag) {
            long = true; // train's default: 2000 steps
        }
    }
    if command == "allreduce" && !chosen.iter().any(|c| c.0 == "--iters") {
        long = true;
    }
    // calibration measures this machine and trains: real work, by design
    long |= chosen.iter().any(|c| c.0 == "--calibrate");
    if command == "train" && g.chance(0.7) {
        chosen.push(("--quiet", None));
    }
    for i in (1..chosen.len()).rev() {
        chosen.swap(i, g.below(i + 1));
    }
    for (flag, value) in chosen {
        words.push(flag.to_string());
        if let Some((v, is_long)) = value {
            words.push(v.to_string());
            long |= is_long;
        }
    }
    match g.below(20) {
        0 => words.push("--no-such-flag".into()),
        1 => words.push("stray".into()),
        2 => words.truncate(words.len().saturating_sub(1)), // a flag without its value
        _ => {}
    }
    Case { words, long }
}

/// The shared fixtures: small files of each kind, a FIFO, a directory, a trained run.
fn fixtures(root: &Path) -> PathBuf {
    let f = root.join("fixtures");
    std::fs::create_dir_all(f.join("dir")).unwrap();
    let story = "Once upon a time a small fox found a red ball by the river. ".repeat(60);
    std::fs::write(f.join("tiny.txt"), &story).unwrap();
    std::fs::write(f.join("with space ü.txt"), &story).unwrap();
    std::fs::write(f.join("short.txt"), "abc").unwrap();
    std::fs::write(f.join("latin1.txt"), b"caf\xe9 ".repeat(100)).unwrap();
    let mut cut = "héllo wörld ".repeat(100).into_bytes();
    cut.extend_from_slice(&"€".as_bytes()[..2]);
    std::fs::write(f.join("cut.txt"), cut).unwrap();
    std::fs::write(f.join("binary.bin"), b"\0\x01\x02".repeat(100)).unwrap();
    let fifo = Command::new("mkfifo").arg(f.join("fifo")).status();
    assert!(
        fifo.is_ok_and(|s| s.success()),
        "mkfifo is needed for the FIFO case"
    );
    let tiny = f.join("tiny.txt");
    let out = Command::new(BIN)
        .args(["train", "--data", tiny.to_str().unwrap(), "--out"])
        .arg(f.join("run"))
        .args([
            "--steps", "2", "--layers", "1", "--heads", "2", "--embd", "16",
        ])
        .args([
            "--block",
            "8",
            "--batch",
            "2",
            "--eval-every",
            "0",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "the fixture run failed: {out:?}");
    f
}

/// The words with `@` fixtures resolved, for a case run in `dir`.
fn resolve(words: &[String], fixtures: &Path, dir: &Path) -> Vec<String> {
    words
        .iter()
        .map(|w| match w.strip_prefix('@') {
            Some("RUN") => {
                let copy = dir.join("trained");
                if !copy.exists() {
                    std::fs::create_dir_all(&copy).unwrap();
                    for e in std::fs::read_dir(fixtures.join("run")).unwrap() {
                        let e = e.unwrap();
                        if e.file_type().unwrap().is_file() {
                            std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
                        }
                    }
                }
                "trained".to_string()
            }
            Some(name) => fixtures.join(name).to_string_lossy().into_owned(),
            None => w.clone(),
        })
        .collect()
}

/// How one run ended.
struct Ran {
    code: Option<i32>,
    stopped: bool,
    stderr: String,
}

fn run(args: &[String], dir: &Path, long: bool) -> Ran {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nanodist");
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut pipe, &mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let limit = Duration::from_secs(if long { LONG_S } else { HANG_S });
    let start = Instant::now();
    let (status, stopped) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status, false);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break (child.wait().unwrap(), true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        code: status.code(),
        stopped,
        stderr: reader.join().unwrap(),
    }
}

/// What is wrong with how a case ended, if anything.
fn judge(ran: &Ran, long: bool, dir: &Path) -> Option<String> {
    if ran.stopped && !long {
        return Some(format!(
            "still running after {HANG_S} s: a hang or unbounded work"
        ));
    }
    if ran.stderr.contains("panicked") {
        return Some(format!("a panic:\n{}", excerpt(&ran.stderr)));
    }
    if !ran.stopped {
        match ran.code {
            None => return Some("killed by a signal".into()),
            Some(0) => {}
            Some(1 | 2) => {
                let lines = ran.stderr.lines().filter(|l| !l.trim().is_empty()).count();
                if lines != 1 {
                    return Some(format!(
                        "{lines} lines on stderr:\n{}",
                        excerpt(&ran.stderr)
                    ));
                }
            }
            Some(c) => return Some(format!("exit status {c}:\n{}", excerpt(&ran.stderr))),
        }
    }
    incomplete_runs(dir).map(|d| {
        format!(
            "{} has summary.json but not its checkpoint and config",
            d.display()
        )
    })
}

/// The first lines of a stderr: the message, without a backtrace's hundred lines.
fn excerpt(stderr: &str) -> String {
    stderr.lines().take(6).collect::<Vec<_>>().join("\n")
}

/// A directory under `dir` that claims to be a finished run (summary.json) without the
/// checkpoint and config.json that a finished run holds.
fn incomplete_runs(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    if dir.join("summary.json").is_file()
        && !(dir.join("checkpoint.safetensors").is_file() && dir.join("config.json").is_file())
    {
        return Some(dir.to_path_buf());
    }
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| incomplete_runs(&e.path()))
}

/// The command as a shell would take it, to paste and rerun.
fn shell(args: &[String]) -> String {
    let quote = |a: &String| {
        let plain = !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:,=".contains(c));
        if plain {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    std::iter::once("nanodist".to_string())
        .chain(args.iter().map(quote))
        .collect::<Vec<_>>()
        .join(" ")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn no_command_line_panics_hangs_or_leaves_a_false_run() {
    let seed = env_u64("NANODIST_HOSTILE_SEED", 22);
    let cases = env_u64("NANODIST_HOSTILE_CASES", 48) as usize;
    let root = TempDir::new(&format!("hostile-{seed}"));
    let fixtures = fixtures(&root.0);
    let mut g = Gen(seed);
    let all: Vec<Case> = (0..cases).map(|_| generate(&mut g)).collect();
    // two at a time: the cases wait on processes, and most of them end in milliseconds
    // how the lines ended: exit 0, 1, 2, other, stopped after LONG_S
    let tally: [AtomicUsize; 5] = Default::default();
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|lane| {
                let (all, root, fixtures, tally) = (&all, &root, &fixtures, &tally);
                s.spawn(move || {
                    let mut failures = Vec::new();
                    for (i, case) in all.iter().enumerate().skip(lane).step_by(2) {
                        let dir = root.path(&format!("case-{i}"));
                        std::fs::create_dir_all(&dir).unwrap();
                        let args = resolve(&case.words[..], fixtures, &dir);
                        let ran = run(&args, &dir, case.long);
                        let slot = match (ran.stopped, ran.code) {
                            (true, _) => 4,
                            (false, Some(c @ 0..=2)) => c as usize,
                            _ => 3,
                        };
                        tally[slot].fetch_add(1, Ordering::Relaxed);
                        match judge(&ran, case.long, &dir) {
                            Some(why) => failures.push(format!(
                                "case {i}: {}\n  (in {})\n  {why}",
                                shell(&args),
                                dir.display()
                            )),
                            None => {
                                let _ = std::fs::remove_dir_all(&dir);
                            }
                        }
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let t = tally.map(|c| c.into_inner());
    println!(
        "seed {seed}: {cases} command lines: {} succeeded, {} refused (1), {} did not parse (2), \
         {} other, {} long on purpose and stopped",
        t[0], t[1], t[2], t[3], t[4]
    );
    if !failures.is_empty() {
        std::mem::forget(root); // keep the fixtures and the failing cases' directories
    }
    assert!(
        failures.is_empty(),
        "seed {seed} (NANODIST_HOSTILE_SEED={seed} NANODIST_HOSTILE_CASES={cases}): {} of {cases} command lines failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
