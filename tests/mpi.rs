//! Training across MPI processes (`cargo test --release --features mpi --test mpi`): the
//! same bits as threads, mismatched flags refused, a killed rank ending the job, a resume
//! under another process count. Each test starts `mpirun` as a user would.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{nanodist, TempDir, BIN};

/// A tiny deterministic model: a step takes about a millisecond.
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
    "8",
    "--deterministic",
    "--quiet",
];

/// `mpirun -n ranks nanodist ARGS`, as root and with more ranks than cores allowed.
fn mpirun(ranks: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-n"])
        .arg(ranks.to_string())
        .arg(BIN)
        .args(args);
    c
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The param_hash of a finished run's summary.json.
fn param_hash(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    let s: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    s["param_hash"].as_str().expect("param_hash").to_string()
}

/// A deterministic run on threads and the same under mpirun (`ranks` x `threads`).
fn train(dir: &Path, ranks: usize, threads: usize, extra: &[&str]) -> String {
    let out = dir.to_str().unwrap();
    let threads = threads.to_string();
    let mut args = vec!["train", "--out", out, "--workers", &threads];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    if !extra.contains(&"--steps") {
        args.extend_from_slice(&["--steps", "12"]);
    }
    let o = if ranks == 0 {
        nanodist(&args)
    } else {
        mpirun(ranks, &args).output().expect("run mpirun")
    };
    ok(&o);
    param_hash(dir)
}

#[test]
fn every_layout_of_processes_and_threads_gives_the_same_bits() {
    let t = TempDir::new("mpi-bits");
    let two = train(&t.path("threads2"), 0, 2, &[]);
    let four = train(&t.path("threads4"), 0, 4, &[]);
    assert_eq!(two, four, "2 and 4 threads");
    for cross in ["mpi", "ring"] {
        let hash = train(
            &t.path(&format!("mpi2x1-{cross}")),
            2,
            1,
            &["--mpi-allreduce", cross],
        );
        assert_eq!(hash, two, "mpirun -n 2 x 1 thread, --mpi-allreduce {cross}");
        for algo in ["naive", "ring", "tree", "shared"] {
            let hash = train(
                &t.path(&format!("mpi2x2-{cross}-{algo}")),
                2,
                2,
                &["--mpi-allreduce", cross, "--allreduce", algo],
            );
            assert_eq!(
                hash, four,
                "mpirun -n 2 x 2 threads, --allreduce {algo} --mpi-allreduce {cross}"
            );
        }
    }
}

#[test]
fn only_rank_0_writes_and_prints() {
    let t = TempDir::new("mpi-rank0");
    let dir = t.path("run");
    let o = mpirun(
        2,
        &[
            &[
                "train",
                "--out",
                dir.to_str().unwrap(),
                "--workers",
                "1",
                "--steps",
                "4",
            ],
            TINY,
        ]
        .concat(),
    )
    .output()
    .expect("run mpirun");
    let stdout = ok(&o);
    assert_eq!(stdout.lines().count(), 1, "one summary line:\n{stdout}");
    assert!(dir.join("checkpoint.safetensors").exists());
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(cfg.contains("\"processes\": 2"), "{cfg}");
}

#[test]
fn mismatched_flags_are_refused_in_one_line() {
    // Rank 1 gets another --steps through a wrapper script: an MPMD launch.
    let t = TempDir::new("mpi-flags");
    let out = t.path("run");
    let out = out.to_str().unwrap();
    let o = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-n", "1", BIN])
        .args(["train", "--out", out, "--steps", "5"])
        .args([":", "-n", "1", BIN, "train", "--out", out, "--steps", "6"])
        .output()
        .expect("run mpirun");
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(ours.len(), 1, "{stderr}");
    assert!(
        ours[0].contains("rank 1") && ours[0].contains("same command line"),
        "{stderr}"
    );
}

/// The pid of the process that mpirun `parent` started as rank `rank`.
fn rank_pid(parent: u32, rank: usize) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // "pid (comm) state ppid ...": the fields after the closing parenthesis
        let after = stat.rsplit_once(')').map_or("", |p| p.1);
        let ppid = after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn a_killed_rank_ends_the_job_within_30_s_and_the_run_resumes_on_threads() {
    let t = TempDir::new("mpi-kill");
    let dir = t.path("run");
    let out = dir.to_str().unwrap();
    // A long run, slowed by a straggler (a sleep that changes no number), checkpointing often.
    let mut args = vec![
        "train",
        "--out",
        out,
        "--workers",
        "1",
        "--checkpoint-every",
        "2",
    ];
    args.extend_from_slice(TINY);
    args.extend_from_slice(&["--steps", "100000", "--straggler", "0:20"]);
    let mut job = mpirun(2, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mpirun");
    let started = Instant::now();
    while !dir.join("checkpoint.safetensors").exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = rank_pid(job.id(), 1).expect("rank 1's process");
    let killed = Instant::now();
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let o = loop {
        if let Some(_status) = job.try_wait().unwrap() {
            break job.wait_with_output().unwrap();
        }
        if killed.elapsed() > Duration::from_secs(30) {
            let _ = job.kill();
            panic!("the job still runs 30 s after rank 1 was killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("rank 1"),
        "mpirun names the rank:\n{stderr}"
    );
    assert!(
        stderr.contains("nanodist: mpirun stopped the job") && stderr.contains("--resume"),
        "rank 0 says what happened and how to go on:\n{stderr}"
    );
    // Resume on 2 threads of one process: the checkpoint is one replica's state.
    let o = nanodist(&[
        "train",
        "--resume",
        out,
        "--steps",
        "20",
        "--workers",
        "2",
        "--quiet",
    ]);
    let stdout = ok(&o);
    assert!(stdout.contains("param_hash"), "{stdout}");
}

#[test]
fn a_run_resumes_under_another_process_count_with_the_same_bits() {
    let t = TempDir::new("mpi-resume");
    let (full, part) = (t.path("full"), t.path("part"));
    let expected = train(&full, 0, 2, &[]);
    // 6 steps on 2 processes of 2 threads, then the last 6 on 2 processes of 1 thread.
    train(&part, 2, 2, &["--steps", "6"]);
    let o = mpirun(
        2,
        &[
            "train",
            "--resume",
            part.to_str().unwrap(),
            "--steps",
            "12",
            "--workers",
            "1",
            "--quiet",
        ],
    )
    .output()
    .expect("run mpirun");
    ok(&o);
    assert_eq!(param_hash(&part), expected);
}
