//! The command line, as a user meets it: bad input, faults, checkpoints and resuming.
//!
//! Every bad input must end with ONE line on stderr that names the problem, a non-zero
//! exit status, no panic, and no output that looks like a finished run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{assert_one_line_error, nanodist, TempDir, BIN};

/// A tiny model: each run takes about a second, most of it generating the corpus.
const TINY: &[&str] = &[
    "--layers",
    "1",
    "--heads",
    "2",
    "--embd",
    "16",
    "--block",
    "16",
    "--batch",
    "4",
    "--eval-every",
    "0",
    "--quiet",
];

/// `train --out OUT` with the TINY flags, where any flag in `extra` replaces TINY's.
fn train(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--out", out.to_str().unwrap()];
    let mut tiny = TINY.iter().peekable();
    while let Some(&flag) = tiny.next() {
        let has_value = tiny.peek().is_some_and(|v| !v.starts_with("--"));
        let value = if has_value {
            tiny.next().copied()
        } else {
            None
        };
        if !extra.contains(&flag) {
            args.push(flag);
            args.extend(value);
        }
    }
    args.extend_from_slice(extra);
    nanodist(&args)
}

/// `train --resume DIR --steps STEPS --quiet`.
fn resume(dir: &Path, steps: usize) -> Output {
    let steps = steps.to_string();
    nanodist(&[
        "train",
        "--resume",
        dir.to_str().unwrap(),
        "--steps",
        &steps,
        "--quiet",
    ])
}

fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

#[test]
fn bad_data_files_are_refused() {
    let t = TempDir::new("data");
    let missing = t.path("missing.txt");
    let cases: Vec<(PathBuf, Vec<u8>, &str)> = vec![
        (t.path("empty.txt"), vec![], "empty"),
        (t.path("binary.bin"), b"abc\0def\0ghi".repeat(50), "binary"),
        (t.path("latin1.txt"), b"caf\xe9 ".repeat(100), "UTF-8"),
        (t.path("short.txt"), b"just a few chars".to_vec(), "--block"),
    ];
    let out = train(&t.path("run0"), &["--data", missing.to_str().unwrap()]);
    assert_one_line_error(&out, &["missing.txt"]);
    for (i, (path, bytes, needle)) in cases.iter().enumerate() {
        std::fs::write(path, bytes).unwrap();
        let run = t.path(&format!("run{}", i + 1));
        let out = train(&run, &["--data", path.to_str().unwrap()]);
        assert_one_line_error(&out, &[needle]);
        assert!(!run.join("summary.json").exists() && !run.join("checkpoint.safetensors").exists());
    }
    let out = train(&t.path("rundir"), &["--data", t.0.to_str().unwrap()]);
    assert_one_line_error(&out, &[]);
}

#[test]
fn bad_sizes_are_refused() {
    let t = TempDir::new("sizes");
    let out = t.path("run");
    let cases: &[(&[&str], &[&str])] = &[
        (&["--workers", "0"], &["--workers"]),
        (&["--workers", "3"], &["--batch 4", "3 workers"]),
        (&["--accum", "3"], &["accumulation"]),
        (&["--heads", "3"], &["--heads 3", "--embd 16"]),
        (&["--embd", "0"], &["--embd"]),
        (&["--block", "0"], &["--block"]),
        (&["--layers", "0"], &["--layers"]),
        (&["--batch", "0"], &["--batch"]),
        (&["--steps", "0"], &["--steps"]),
        (&["--lr", "-1"], &["--lr"]),
        (
            &["--embd", "32768", "--heads", "2", "--layers", "64"],
            &["GiB", "available"],
        ),
        (&["--straggler", "5:10"], &["--straggler", "worker 5"]),
    ];
    for (args, needles) in cases {
        let o = train(&out, args);
        assert_one_line_error(&o, needles);
        assert!(
            !out.join("summary.json").exists(),
            "{args:?} left a summary"
        );
    }
}

#[test]
fn flags_that_do_not_parse_get_one_line_too() {
    // clap's own reports span several lines (error, tip, usage, "For more information")
    // a negative count is named as a bad value of its flag, not as an unknown flag '-1'
    let cases: [(&[&str], &[&str]); 9] = [
        (
            &["--step", "5"],
            &["'--step'", "tip", "'--steps'", "--help"],
        ),
        (&["--steps", "abc"], &["'abc'", "--steps"]),
        (&["--allreduce", "foo"], &["'foo'", "ring, tree"]),
        (&["sample"], &["--run"]),
        (&["bench", "--workers", "1,x"], &["'x'", "--workers"]),
        (&["--seed", "-1"], &["'-1'", "--seed"]),
        (
            &["--straggler", "-1:5"],
            &["'-1:5'", "--straggler", "worker"],
        ),
        (&["bench", "--workers", "-2"], &["'-2'", "--workers"]),
        (&["allreduce", "--floats", "-1"], &["'-1'", "--floats"]),
    ];
    for (args, needles) in cases {
        let o = nanodist(args);
        assert_one_line_error(&o, needles);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
    // a sweep that would not fit in memory is refused before any thread starts
    let o = nanodist(&["allreduce", "--workers", "100000", "--floats", "10"]);
    assert_one_line_error(&o, &["--workers 100000", "GiB", "fewer --workers"]);
    // a negative temperature parses as a value (for nanodist's own check, after the run
    // directory's) instead of looking like a flag
    let o = nanodist(&["sample", "--run", "nowhere", "--temperature", "-1"]);
    assert_one_line_error(&o, &["nowhere"]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("unexpected argument"));
    // help still prints in full, on stdout, and succeeds
    let o = nanodist(&["sample", "--help"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("Usage: nanodist sample"));
}

/// Runs nanodist with `args` as `nanodist ARGS | head -c 1` would: reads one byte of its
/// output, closes the pipe, and waits for it to end.
fn read_one_byte_and_leave(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_reader_that_leaves_early_stops_nanodist_quietly() {
    // `nanodist ... | head -1`: the pipe closes after the first line. The run prints its
    // header, trains (4,000 tiny steps, most of a second), then prints its summary into the
    // closed pipe; the pipe is long closed by then, even on a busy machine.
    let t = TempDir::new("pipe");
    let out = t.path("run");
    let mut args = vec!["train", "--out", out.to_str().unwrap(), "--steps", "4000"];
    args.extend(TINY.iter().filter(|&&a| a != "--quiet"));
    let o = read_one_byte_and_leave(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !stderr.contains("panicked"),
        "a panic on a closed pipe:\n{stderr}"
    );
    assert_eq!(o.status.code(), Some(141), "{stderr}");
}

/// `nanodist ARGS > /dev/full`: every write to stdout fails with "No space left on device".
#[cfg(target_os = "linux")]
fn to_full_disk(args: &[&str]) -> Output {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    Command::new(BIN).args(args).stdout(full).output().unwrap()
}

#[test]
#[cfg(target_os = "linux")]
fn a_full_disk_for_stdout_is_a_one_line_error() {
    let t = TempDir::new("full");
    let run = t.path("run");
    let mut args = vec!["train", "--out", run.to_str().unwrap(), "--steps", "2"];
    args.extend(TINY.iter().filter(|&&a| a != "--quiet"));
    let trained = t.path("trained");
    assert!(train(&trained, &["--steps", "2"]).status.success());
    let sample = [
        "sample",
        "--run",
        trained.to_str().unwrap(),
        "--chars",
        "20",
    ];
    for (what, o) in [
        ("train", to_full_disk(&args)),
        ("sample", to_full_disk(&sample)),
    ] {
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{what}: {stderr}");
        assert!(
            stderr.starts_with("error: cannot write to standard output: No space left"),
            "{what}: {stderr}"
        );
    }
}

#[test]
fn sample_stops_when_its_reader_leaves() {
    let t = TempDir::new("pipe-sample");
    let run = t.path("run");
    assert!(train(&run, &["--steps", "2"]).status.success());
    // 200,000 characters would take minutes; the reader takes one byte and leaves
    let run = run.to_str().unwrap();
    let o = read_one_byte_and_leave(&["sample", "--run", run, "--chars", "200000"]);
    assert_eq!(o.status.code(), Some(141));
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn an_out_dir_that_cannot_be_made_is_refused() {
    let t = TempDir::new("outdir");
    let file = t.path("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let o = train(&file.join("run"), &[]);
    assert_one_line_error(&o, &["a-file", "--out"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
}

#[test]
fn resume_refuses_missing_damaged_or_mismatched_checkpoints() {
    let t = TempDir::new("resume");
    let run = t.path("run");
    let o = nanodist(&["train", "--resume", t.path("nope").to_str().unwrap()]);
    assert_one_line_error(&o, &["nope", "does not exist"]);

    assert!(train(&run, &["--steps", "3", "--workers", "2"])
        .status
        .success());
    let ck = run.join("checkpoint.safetensors");
    let good = std::fs::read(&ck).unwrap();
    let resume = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--resume",
            run.to_str().unwrap(),
            "--steps",
            "5",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        nanodist(&args)
    };
    // truncated
    std::fs::write(&ck, &good[..good.len() / 2]).unwrap();
    assert_one_line_error(&resume(&[]), &["damaged"]);
    // one flipped byte in the tensor data (the last byte of the file)
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 0x10;
    std::fs::write(&ck, &flipped).unwrap();
    assert_one_line_error(&resume(&[]), &["checksum"]);
    // another shape
    std::fs::write(&ck, &good).unwrap();
    assert_one_line_error(&resume(&["--embd", "32"]), &["--resume"]);
    // the original resumes fine
    let ok = resume(&[]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(summary(&run)["steps"], 5);
    // a run directory is never overwritten by a new run
    assert_one_line_error(&train(&run, &[]), &["already holds a run"]);
}

#[test]
fn resume_refuses_a_changed_vocabulary_and_sample_refuses_unknown_chars() {
    let t = TempDir::new("vocab");
    let data = t.path("text.txt");
    std::fs::write(&data, "the cat sat on the mat. ".repeat(200)).unwrap();
    let run = t.path("run");
    let o = train(&run, &["--data", data.to_str().unwrap(), "--steps", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = nanodist(&[
        "sample",
        "--run",
        run.to_str().unwrap(),
        "--prompt",
        "the dog",
        "--chars",
        "5",
    ]);
    assert_one_line_error(&o, &["'d'", "vocabulary"]);
    let o = nanodist(&[
        "sample",
        "--run",
        run.to_str().unwrap(),
        "--prompt",
        "the cat",
        "--chars",
        "20",
    ]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("the cat"));

    std::fs::write(&data, "the dog sat on the log! ".repeat(200)).unwrap();
    let o = resume(&run, 4);
    assert_one_line_error(&o, &["vocabulary"]);
}

#[test]
fn an_injected_worker_panic_stops_the_run_quickly_and_keeps_the_checkpoint() {
    let t = TempDir::new("fault");
    let run = t.path("run");
    let start = Instant::now();
    let o = train(
        &run,
        &[
            "--workers",
            "2",
            "--steps",
            "50",
            "--checkpoint-every",
            "5",
            "--fault",
            "1:12",
        ],
    );
    let took = start.elapsed();
    assert_one_line_error(&o, &["worker 1", "step 12", "checkpoint (step 10)"]);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(!run.join("summary.json").exists());
    // The last good checkpoint resumes (injected faults are not part of the saved run).
    let o = resume(&run, 14);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(summary(&run)["start_step"], 10);
}

#[test]
fn a_diverging_run_stops_naming_the_step() {
    let t = TempDir::new("nan");
    let o = train(
        &t.path("run"),
        &["--lr", "1e30", "--steps", "30", "--workers", "2"],
    );
    assert_one_line_error(&o, &["step", "diverged", "--lr"]);
}

#[test]
fn a_straggler_makes_the_others_wait() {
    let t = TempDir::new("straggler");
    let run = t.path("run");
    let o = train(
        &run,
        &["--workers", "2", "--steps", "8", "--straggler", "1:30"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = summary(&run);
    let per = s["per_worker_ms"].as_array().unwrap();
    let wait0 = per[0][2].as_f64().unwrap();
    let wait1 = per[1][2].as_f64().unwrap();
    // Worker 0 waits for worker 1's 30 ms sleep every step; worker 1 never waits long.
    assert!(wait0 > 20.0, "worker 0 waited {wait0} ms");
    assert!(wait1 < wait0, "worker 1 waited {wait1} ms");
}

#[test]
fn interrupted_and_resumed_equals_uninterrupted() {
    let t = TempDir::new("interrupt");
    let (full, part) = (t.path("full"), t.path("part"));
    let flags = [
        "--workers",
        "2",
        "--deterministic",
        "--checkpoint-every",
        "2",
    ];
    let o = train(&full, &[&flags[..], &["--steps", "8"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = train(&part, &[&flags[..], &["--steps", "4"]].concat());
    assert!(o.status.success());
    let o = resume(&part, 8);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(summary(&part)["param_hash"], summary(&full)["param_hash"]);
}

#[test]
fn killed_while_checkpointing_then_resumed_equals_uninterrupted() {
    let t = TempDir::new("kill");
    let full = t.path("full");
    let flags = [
        "--workers",
        "2",
        "--deterministic",
        "--checkpoint-every",
        "1",
        "--steps",
        "200",
    ];
    let o = train(&full, &flags);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected = summary(&full)["param_hash"].clone();
    // Kill at several moments; with a checkpoint every step, saves take much of each step,
    // so some kills land mid-save. Each time the directory must still resume to the same end.
    for (i, delay_ms) in [5u64, 37, 101].iter().enumerate() {
        let run = t.path(&format!("killed{i}"));
        let mut args = vec![
            "train".to_string(),
            "--out".into(),
            run.to_str().unwrap().into(),
        ];
        args.extend(TINY.iter().chain(flags.iter()).map(|s| s.to_string()));
        let mut child = Command::new(BIN).args(&args).spawn().unwrap();
        let ck = run.join("checkpoint.safetensors");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ck.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(*delay_ms));
        child.kill().unwrap(); // SIGKILL: no cleanup runs
        child.wait().unwrap();
        if run.join("summary.json").exists() {
            continue; // it finished before the kill: nothing to resume
        }
        let o = resume(&run, 200);
        assert!(
            o.status.success(),
            "resume after kill {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            summary(&run)["param_hash"],
            expected,
            "kill {i} after {delay_ms} ms"
        );
    }
}
