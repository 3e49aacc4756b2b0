//! `nanodist scale` as a user meets it: the JSON it promises, the files `--out` writes, a
//! calibration that runs end to end, and one line for every bad input. No timing is
//! asserted here: speed lives in benchmarks, never in a pass/fail test.

mod common;

use common::{assert_one_line_error, nanodist, TempDir};

/// Runs `nanodist scale --json ARGS` and parses its one JSON object.
fn scale_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["scale", "--json"];
    all.extend_from_slice(args);
    let out = nanodist(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nanodist {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim().lines().count(), 1, "not one line: {stdout}");
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

const KEYS: [&str; 7] = [
    "fits",
    "memory_gib_per_gpu",
    "step_s",
    "tflops_per_gpu",
    "mfu",
    "tokens_per_s",
    "days",
];

fn assert_keys(v: &serde_json::Value) {
    for key in KEYS {
        assert!(v.get(key).is_some(), "missing key {key} in {v}");
    }
}

#[test]
fn the_default_is_megatrons_175b_run_and_fits() {
    let v = scale_json(&[]);
    assert_keys(&v);
    assert_eq!(v["fits"], true);
    assert_eq!(v["config"]["gpus"], 1024);
    assert_eq!(v["layout"]["dp"], 16);
}

#[test]
fn presets_and_layouts_that_do_not_fit() {
    let v = scale_json(&[
        "--model", "gpt2", "--gpus", "8", "--tp", "1", "--pp", "1", "--batch", "64",
    ]);
    assert_keys(&v);
    assert_eq!(v["fits"], true);
    assert_eq!(v["config"]["model"]["layers"], 12);
    // GPT-3 on 64 GPUs of pure data parallelism: every GPU holds all 175B parameters
    let v = scale_json(&[
        "--model",
        "gpt3-175b",
        "--gpus",
        "64",
        "--tp",
        "1",
        "--pp",
        "1",
        "--batch",
        "64",
    ]);
    assert_keys(&v);
    assert_eq!(v["fits"], false);
    // the shape flags change the preset
    let v = scale_json(&[
        "--model", "tiny", "--layers", "2", "--gpus", "2", "--tp", "1", "--pp", "1", "--batch",
        "12",
    ]);
    assert_eq!(v["config"]["model"]["layers"], 2);
}

#[test]
fn schedule_zb_shortens_the_step_and_holds_more() {
    let one = scale_json(&["--schedule", "1f1b"]);
    assert_eq!(one, scale_json(&[]), "1f1b is the default");
    let zb = scale_json(&["--schedule", "zb"]);
    assert_keys(&zb);
    assert_eq!(zb["config"]["schedule"], "zb");
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    assert!(f(&zb, "step_s") < f(&one, "step_s"));
    assert!(f(&zb, "memory_gib_per_gpu") > f(&one, "memory_gib_per_gpu"));
}

#[test]
fn out_writes_the_pictures_and_refuses_a_full_directory() {
    let tmp = TempDir::new("scale-out");
    let dir = tmp.path("pred");
    let out = nanodist(&["scale", "--gpu", "h100", "--out", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["step.svg", "memory.svg", "goodput.svg", "prediction.json"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap_or_else(|_| panic!("no {f}"));
        assert!(!text.is_empty(), "{f} is empty");
    }
    let again = nanodist(&["scale", "--out", dir.to_str().unwrap()]);
    assert_one_line_error(&again, &["--out", "not an empty directory"]);
}

#[test]
fn calibrate_runs_and_writes_its_table() {
    let tmp = TempDir::new("scale-calibrate");
    let dir = tmp.path("cal");
    let out = nanodist(&[
        "scale",
        "--calibrate",
        "--steps",
        "3",
        "--rounds",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("calibration.json")).unwrap())
            .unwrap();
    let rows = v["rows"].as_array().expect("rows");
    assert!(rows.len() >= 2, "{v}");
    for r in rows {
        for key in [
            "flags",
            "predicted_ms",
            "measured_ms",
            "ratio",
            "median_ratio",
            "flops_per_core",
            "sync_s_per_point",
            "sync_points",
            "shape",
        ] {
            assert!(r.get(key).is_some(), "row lacks {key}: {r}");
        }
        assert!(r["ratio"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["flops_per_core"].as_f64().unwrap() > 0.0, "{r}");
    }
    // each strategy priced at its own shapes, with its own synchronisation points
    let row = |flags: &str| {
        rows.iter()
            .find(|r| r["flags"] == flags)
            .unwrap_or_else(|| panic!("no row {flags}: {v}"))
    };
    let tp = row("--workers 2 --tp 2");
    assert!(tp["shape"].as_str().unwrap().contains("slice"), "{tp}");
    assert_eq!(tp["sync_points"].as_f64(), Some(16.0), "{tp}");
    let pp = row("--workers 2 --pp 2 --micro 4");
    assert!(
        pp["shape"]
            .as_str()
            .unwrap()
            .contains("stages of 2 layers, 4 micro-batches of 3, gpipe"),
        "{pp}"
    );
    // every round's ratio and step, for telling the host's spread from the model's bias
    assert_eq!(pp["round_ratios"].as_array().map(Vec::len), Some(1), "{pp}");
    assert_eq!(pp["round_measured_ms"].as_array().map(Vec::len), Some(1));
    assert!(v["load_average_start"].is_string(), "{v}");
    // the overlapped exchange: hand-offs after each of the 4 blocks and the embeddings
    // when no core is free for the communication thread, none when one is
    let overlap = row("--workers 2 --allreduce shared --bucket-kb 256 --overlap");
    let handoffs = if v["cores"].as_u64().unwrap() > 2 {
        0.0
    } else {
        5.0
    };
    assert_eq!(overlap["handoffs"].as_f64(), Some(handoffs), "{overlap}");
    assert_eq!(
        row("--workers 2 --zero 3")["sync_points"].as_f64(),
        Some(12.0)
    );
    assert_eq!(row("--workers 1")["sync_points"].as_f64(), Some(0.0));
    let md = std::fs::read_to_string(dir.join("calibration.md")).unwrap();
    assert!(md.contains("| `--workers 2 --allreduce shared` |"), "{md}");
    // every strategy on the two workers has its row
    for flags in [
        "--zero 1",
        "--zero 2",
        "--zero 3",
        "--tp 2",
        "--pp 2 --micro 4",
    ] {
        assert!(md.contains(&format!("| `--workers 2 {flags}` |")), "{md}");
    }
    assert!(!v["not_modelled"].as_array().unwrap().is_empty());
}

#[test]
fn calibrate_only_runs_the_chosen_configurations() {
    let tmp = TempDir::new("scale-calibrate-only");
    let dir = tmp.path("cal");
    let out = nanodist(&[
        "scale",
        "--calibrate",
        "--workers",
        "2",
        "--steps",
        "3",
        "--rounds",
        "1",
        "--only",
        "pp 2",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("calibration.json")).unwrap())
            .unwrap();
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["flags"], "--workers 2 --pp 2 --micro 4");
    let none = nanodist(&["scale", "--calibrate", "--only", "no-such-case"]);
    assert_one_line_error(&none, &["--only", "no configuration"]);
}

#[test]
fn bad_input_is_one_line() {
    let cases: [(&[&str], &[&str]); 8] = [
        (&["--model", "gpt5"], &["--model gpt5", "gpt3"]),
        (&["--gpu", "v100"], &["--gpu v100", "a100 or h100"]),
        (
            &["--gpus", "1000"],
            &["1000 GPUs", "--gpus a multiple of 64"],
        ),
        (&["--model", "tiny"], &["--pp"]),
        (&["--batch", "100"], &["batch 100", "--batch"]),
        (&["--zero", "4"], &["ZeRO stage 4", "--zero"]),
        (&["--layers", "0"], &["--layers must be at least 1"]),
        (
            &["--calibrate", "--workers", "5"],
            &["--workers 5", "divide"],
        ),
    ];
    for (args, needles) in cases {
        let mut all = vec!["scale"];
        all.extend_from_slice(args);
        let out = nanodist(&all);
        assert_one_line_error(&out, needles);
        assert_eq!(out.status.code(), Some(1), "{all:?}");
    }
    // a value that does not parse is clap's, exit 2, still one line
    for args in [
        &["scale", "--gpus", "many"][..],
        &["scale", "--recompute", "maybe"],
        &["scale", "--schedule", "zbv"],
    ] {
        let out = nanodist(args);
        assert_one_line_error(&out, &["--"]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
