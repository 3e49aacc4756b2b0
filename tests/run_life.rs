//! A run's life among people: Ctrl-C, `kill`, two runs on one directory, a data file that
//! moves or changes, a directory of someone else's files, a run resumed on fewer workers.
//!
//! Each test drives the built binary as a user would and checks what is left on disk.
//! Runs that must still be going when a signal arrives are slowed with `--straggler`
//! (a sleep that changes no number), so no test depends on how fast the machine is.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_one_line_error, nanodist, TempDir, BIN};

/// A tiny deterministic model on 4 workers: a step takes about a millisecond.
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
    "--workers",
    "4",
    "--deterministic",
    "--quiet",
];

fn args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["train", "--out", out];
    a.extend_from_slice(TINY);
    a.extend_from_slice(extra);
    a
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("JSON")
}

/// The steps of metrics.jsonl's step rows, and the steps of its evaluation rows.
fn metric_steps(dir: &Path) -> (Vec<u64>, Vec<u64>) {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let (mut steps, mut evals) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let row: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        let step = row["step"].as_u64().expect("each line has a step");
        if row.get("val_loss").is_some() {
            evals.push(step);
        } else {
            for key in [
                "loss",
                "lr",
                "tokens_per_s",
                "compute_ms",
                "comm_ms",
                "wait_ms",
            ] {
                assert!(row.get(key).is_some(), "a step row lacks {key}: {line}");
            }
            steps.push(step);
        }
    }
    (steps, evals)
}

/// Asserts that metrics.jsonl holds each of the steps `0..n` exactly once, in order.
fn assert_every_step_once(dir: &Path, n: u64) {
    let (steps, _) = metric_steps(dir);
    let want: Vec<u64> = (0..n).collect();
    if steps != want {
        let first = (0..steps.len().max(want.len()))
            .find(|&i| steps.get(i) != want.get(i))
            .unwrap();
        panic!(
            "metrics.jsonl has {} step rows, want {n}; first difference at row {first}: {:?} vs {:?}",
            steps.len(),
            steps.get(first),
            want.get(first)
        );
    }
}

/// Starts `nanodist ARGS` in the background.
fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nanodist")
}

/// Waits until `dir/metrics.jsonl` holds at least `rows` lines (the run is training).
fn wait_for_rows(dir: &Path, rows: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let n = std::fs::read_to_string(dir.join("metrics.jsonl")).map_or(0, |t| t.lines().count());
        if n >= rows {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the run in {} did not start training", dir.display());
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().to_string();
    let s = Command::new("kill").args([name, &pid]).status().unwrap();
    assert!(s.success(), "kill {name} {pid}");
}

#[test]
fn sigint_stops_at_a_step_boundary_and_a_resume_on_two_workers_equals_four_uninterrupted() {
    let t = TempDir::new("life-sigint");
    let (full, part) = (t.path("full"), t.path("part"));
    let (full_s, part_s) = (full.to_str().unwrap(), part.to_str().unwrap());
    // Default checkpointing: only evaluations (every 50 steps) and the stop write one.
    let flags = ["--steps", "300", "--eval-every", "50"];
    ok(&nanodist(&args(full_s, &flags)));
    let expected = json(&full.join("summary.json"))["param_hash"].clone();

    let child = spawn(&args(
        part_s,
        &[&flags[..], &["--straggler", "0:3"]].concat(),
    ));
    wait_for_rows(&part, 10);
    signal(&child, "-INT");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "exit status after SIGINT");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr}");
    assert!(lines[0].contains(&format!("--resume {part_s}")), "{stderr}");
    let summary = json(&part.join("summary.json"));
    let k = summary["interrupted_at_step"]
        .as_u64()
        .expect("where it stopped");
    assert!((10..300).contains(&k), "stopped at {k}");
    assert_eq!(summary["steps"], k);
    assert_every_step_once(&part, k);

    let o = nanodist(&["train", "--resume", part_s, "--workers", "2", "--quiet"]);
    ok(&o);
    let summary = json(&part.join("summary.json"));
    assert_eq!(summary["workers"], 2);
    assert_eq!(
        summary["param_hash"], expected,
        "4 workers stopped at step {k} and resumed on 2 must end as 4 uninterrupted"
    );
    assert_every_step_once(&part, 300);
    let (_, evals) = metric_steps(&part);
    assert_eq!(
        evals,
        [50, 100, 150, 200, 250, 300],
        "every evaluation once"
    );
}

#[test]
fn after_sigkill_and_resume_metrics_hold_every_step_once() {
    let t = TempDir::new("life-kill");
    let run = t.path("run");
    let run_s = run.to_str().unwrap();
    let flags = [
        "--steps",
        "200",
        "--checkpoint-every",
        "7",
        "--eval-every",
        "0",
    ];
    let mut child = spawn(&args(
        run_s,
        &[&flags[..], &["--straggler", "1:3"]].concat(),
    ));
    wait_for_rows(&run, 30);
    child.kill().unwrap(); // SIGKILL: nothing runs after it
    child.wait().unwrap();
    let (steps, _) = metric_steps(&run);
    assert!(steps.len() >= 30, "rows are on disk as they happen");
    let o = nanodist(&["train", "--resume", run_s, "--quiet"]);
    ok(&o);
    assert_every_step_once(&run, 200);
    let (_, evals) = metric_steps(&run);
    assert_eq!(evals, [200], "the final evaluation, once");
}

#[test]
fn a_second_run_on_a_directory_in_use_is_refused_naming_the_pid() {
    let t = TempDir::new("life-lock");
    let run = t.path("run");
    let run_s = run.to_str().unwrap();
    let flags = ["--steps", "2000", "--straggler", "0:3"];
    let mut first = spawn(&args(run_s, &flags));
    wait_for_rows(&run, 2);
    let pid = format!("pid {}", first.id());
    let o = nanodist(&args(run_s, &["--steps", "5"]));
    assert_one_line_error(&o, &["in use", &pid, run_s]);
    let o = nanodist(&["train", "--resume", run_s, "--quiet"]);
    assert_one_line_error(&o, &["in use", &pid]);
    signal(&first, "-TERM");
    let status = first.wait().unwrap();
    assert_eq!(status.code(), Some(143), "exit status after SIGTERM");
    // The lock goes with its process: the directory resumes now.
    let k = json(&run.join("summary.json"))["interrupted_at_step"]
        .as_u64()
        .expect("SIGTERM stops cleanly too");
    let more = (k + 5).to_string();
    let o = nanodist(&["train", "--resume", run_s, "--steps", &more, "--quiet"]);
    ok(&o);
    assert_eq!(json(&run.join("summary.json"))["steps"], k + 5);
}

#[test]
fn out_refuses_a_directory_that_is_not_a_nanodist_run() {
    let t = TempDir::new("life-foreign");
    let dir = t.path("mine");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), "{\"my\": \"settings\"}").unwrap();
    let o = nanodist(&args(dir.to_str().unwrap(), &["--steps", "2"]));
    assert_one_line_error(&o, &["--out", "config.json", "not a nanodist run"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("config.json")).unwrap(),
        "{\"my\": \"settings\"}"
    );
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 1, "nothing added to the directory");
}

#[test]
fn a_moved_data_file_is_found_by_fingerprint_and_a_changed_one_is_refused() {
    let t = TempDir::new("life-data");
    let text = "the cat sat on the mat. ".repeat(200);
    std::fs::write(t.path("text.txt"), &text).unwrap();
    // A relative --data, from the run's own working directory.
    let o = Command::new(BIN)
        .current_dir(&t.0)
        .args(args("run", &["--data", "text.txt", "--steps", "3"]))
        .output()
        .unwrap();
    ok(&o);
    let run = t.path("run");
    let run_s = run.to_str().unwrap();
    let prov = json(&run.join("provenance.json"));
    let recorded = prov["data"]["path"].as_str().unwrap().to_string();
    assert!(Path::new(&recorded).is_absolute(), "{recorded}");
    assert_eq!(prov["data"]["bytes"], text.len());
    let inv = &prov["invocations"][0];
    for key in ["command_line", "cpu_model", "threads"] {
        assert!(inv.get(key).is_some(), "provenance lacks {key}: {prov}");
    }
    assert!(prov["nanodist_version"].is_string());
    // Resumed from another working directory: found by its absolute path.
    ok(&nanodist(&[
        "train", "--resume", run_s, "--steps", "4", "--quiet",
    ]));
    // Moved: named again with --data, accepted by size and hash.
    let moved = t.path("moved.txt");
    std::fs::rename(t.path("text.txt"), &moved).unwrap();
    let o = nanodist(&["train", "--resume", run_s, "--steps", "5", "--quiet"]);
    assert_one_line_error(&o, &["gone", "--data"]);
    let moved_s = moved.to_str().unwrap();
    let o = nanodist(&[
        "train", "--resume", run_s, "--steps", "5", "--data", moved_s, "--quiet",
    ]);
    ok(&o);
    // Changed, with the same characters and size: refused, naming what changed.
    std::fs::write(&moved, "the mat sat on the cat. ".repeat(200)).unwrap();
    let o = nanodist(&["train", "--resume", run_s, "--steps", "6", "--quiet"]);
    assert_one_line_error(&o, &["moved.txt", "same size", "other contents"]);
}

#[test]
fn an_edited_config_json_is_refused_by_resume_and_sample() {
    let t = TempDir::new("life-config");
    let run = t.path("run");
    let run_s = run.to_str().unwrap();
    ok(&nanodist(&args(run_s, &["--steps", "2"])));
    let cfg = run.join("config.json");
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, good.replace("\"beta1\": 0.9", "\"beta1\": 0.5")).unwrap();
    let o = nanodist(&["train", "--resume", run_s, "--steps", "4", "--quiet"]);
    assert_one_line_error(&o, &["config.json", "beta1", "delete it"]);
    let o = nanodist(&["sample", "--run", run_s, "--chars", "5"]);
    assert_one_line_error(&o, &["config.json", "beta1"]);
    std::fs::write(&cfg, &good[..good.len() / 2]).unwrap();
    let o = nanodist(&["train", "--resume", run_s, "--steps", "4", "--quiet"]);
    assert_one_line_error(&o, &["config.json", "not a nanodist configuration"]);
    std::fs::write(&cfg, &good).unwrap();
    ok(&nanodist(&[
        "train", "--resume", run_s, "--steps", "4", "--quiet",
    ]));
}

#[test]
fn fault_steps_the_run_never_reaches_are_refused() {
    let t = TempDir::new("life-fault");
    let run = t.path("run");
    let run_s = run.to_str().unwrap();
    let o = nanodist(&args(run_s, &["--steps", "5", "--fault", "1:5"]));
    assert_one_line_error(&o, &["--fault 1:5", "--steps 5"]);
    ok(&nanodist(&args(run_s, &["--steps", "4"])));
    let o = nanodist(&["train", "--resume", run_s, "--steps", "8", "--fault", "1:2"]);
    assert_one_line_error(&o, &["--fault 1:2", "step 4"]);
    let o = nanodist(&["train", "--resume", run_s, "--workers", "3", "--steps", "8"]);
    assert_one_line_error(&o, &["--workers 3", "4 sequences"]);
}

#[test]
fn the_end_of_run_hint_prompts_with_the_corpus_own_text() {
    let t = TempDir::new("life-hint");
    let data = t.path("lower.txt");
    std::fs::write(&data, "sun and rain on the hill. ".repeat(100)).unwrap();
    let run = t.path("run");
    let o = nanodist(&[
        "train",
        "--out",
        run.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--steps",
        "2",
        "--workers",
        "1",
        "--layers",
        "1",
        "--embd",
        "16",
        "--heads",
        "2",
        "--block",
        "16",
        "--batch",
        "4",
    ]);
    ok(&o);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let hint = stdout
        .lines()
        .find(|l| l.contains("nanodist sample"))
        .unwrap();
    assert!(hint.ends_with("--prompt 'sun'"), "{hint}");
    let prov = json(&run.join("provenance.json"));
    assert!(
        prov["invocations"][0]["sample"].is_string(),
        "the sample is recorded"
    );
}

/// A worker thread that cannot be started is one clean error, and the run directory is not
/// left looking finished. The failure is real, not simulated: `RUST_MIN_STACK` (read by
/// std for every thread it spawns) asks for 64 TiB of stack, so the kernel refuses the
/// mapping and `std::thread::Builder::spawn` returns the OS error, as it does at a process
/// limit (which root, who runs CI, is exempt from).
#[test]
fn a_worker_thread_that_cannot_start_is_one_line_and_leaves_no_finished_run() {
    let t = TempDir::new("life-spawn");
    let run = t.path("run");
    let o = Command::new(BIN)
        .args(args(run.to_str().unwrap(), &["--steps", "3"]))
        .env("RUST_MIN_STACK", (1u64 << 46).to_string())
        .output()
        .unwrap();
    assert_one_line_error(&o, &["cannot start worker thread", "--workers"]);
    assert_eq!(o.status.code(), Some(1), "a run that fails exits 1");
    for finished in ["summary.json", "checkpoint.safetensors"] {
        assert!(!run.join(finished).exists(), "{finished} written");
    }
    // the same command with threads to spare runs
    ok(&nanodist(&args(run.to_str().unwrap(), &["--steps", "3"])));
    assert!(run.join("summary.json").exists());
}
