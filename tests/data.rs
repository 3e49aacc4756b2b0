//! The data module: vocabulary, file errors, the `tales` corpus and its entropy floor,
//! and the sampler's data-parallel property.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use nanodist::data::{self, sampler, tales, Corpus, Vocab};
use nanodist::Error;

// ---------------------------------------------------------------------------------------
// helpers

/// A fresh path in the system temp dir, unique to this process and call.
fn temp_path(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("nanodist-data-{}-{n}-{name}", std::process::id()))
}

/// Writes `bytes` to a fresh temp file and loads it as a corpus.
fn load_bytes(name: &str, bytes: &[u8]) -> (PathBuf, Result<Corpus, Error>) {
    let path = temp_path(name);
    std::fs::write(&path, bytes).unwrap();
    let result = data::load(path.to_str().unwrap(), 0);
    std::fs::remove_file(&path).unwrap();
    (path, result)
}

/// The message of an expected `Error::Data`, checked to be one line.
fn data_error<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
    match result {
        Err(Error::Data(msg)) => {
            assert!(
                !msg.contains('\n'),
                "error message is not one line: {msg:?}"
            );
            msg
        }
        other => panic!("expected Error::Data, got {other:?}"),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            msg.contains(part),
            "message {msg:?} should mention {part:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// vocabulary

#[test]
fn vocab_is_sorted_distinct_and_round_trips() {
    let text = "the cat sat.\nThe end!";
    let vocab = Vocab::from_text(text);
    assert_eq!(vocab.as_string(), "\n !.Tacdehnst");
    assert_eq!(vocab.len(), 13);
    let ids = vocab.encode(text).unwrap();
    assert_eq!(vocab.decode(&ids), text);
    assert_eq!(Vocab::from_chars(&vocab.as_string()).unwrap(), vocab);

    let wide = Vocab::from_text("naïve café ☕");
    let ids = wide.encode("café ☕").unwrap();
    assert_eq!(wide.decode(&ids), "café ☕");
    assert!(Vocab::from_text("").is_empty());
}

#[test]
fn stored_vocab_must_be_sorted_and_distinct() {
    assert_mentions(
        &data_error(Vocab::from_chars("abca")),
        &["not sorted", "checkpoint"],
    );
    assert_mentions(&data_error(Vocab::from_chars("ba")), &["'b' then 'a'"]);
    assert_mentions(&data_error(Vocab::from_chars("")), &["empty"]);
}

#[test]
fn encoding_an_unknown_char_names_it_and_where() {
    let vocab = Vocab::from_text("abc ");
    let msg = data_error(vocab.encode("ab cé"));
    assert_mentions(&msg, &["'\\u{e9}'", "position 4", "not in the vocabulary"]);
    let msg = data_error(vocab.encode("a\nb"));
    assert_mentions(&msg, &["'\\n'", "position 1"]);
}

// ---------------------------------------------------------------------------------------
// files

#[test]
fn a_text_file_is_split_90_10() {
    let text = "hello world, ".repeat(10); // 130 chars
    let (path, corpus) = load_bytes("ok.txt", text.as_bytes());
    let corpus = corpus.unwrap();
    assert_eq!(corpus.name, path.to_str().unwrap());
    assert_eq!((corpus.train.len(), corpus.val.len()), (117, 13));
    let mut all = corpus.train.clone();
    all.extend(&corpus.val);
    assert_eq!(corpus.vocab.decode(&all), text);
    assert_eq!(corpus.floor_nats, None);
    corpus.check_block(12).unwrap();
}

#[test]
fn a_missing_file_says_so() {
    let path = temp_path("missing.txt");
    let msg = data_error(data::load(path.to_str().unwrap(), 0));
    assert_mentions(&msg, &["does not exist", "--data tales"]);
}

#[test]
fn a_directory_is_not_a_corpus() {
    let dir = temp_path("dir");
    std::fs::create_dir(&dir).unwrap();
    let msg = data_error(data::load(dir.to_str().unwrap(), 0));
    std::fs::remove_dir(&dir).unwrap();
    assert_mentions(&msg, &["is a directory", "input.txt"]);
}

#[test]
fn an_empty_file_says_so() {
    let (_, result) = load_bytes("empty.txt", b"");
    assert_mentions(&data_error(result), &["is empty"]);
}

#[test]
fn a_binary_file_says_so() {
    let (_, result) = load_bytes("model.bin", b"PK\x03\x04\x00\x00\x08\x00");
    assert_mentions(
        &data_error(result),
        &["looks binary", "NUL byte at offset 4"],
    );
}

#[test]
fn a_latin1_file_gives_the_offset_and_iconv() {
    let (_, result) = load_bytes("latin1.txt", b"caf\xe9 au lait");
    let msg = data_error(result);
    assert_mentions(
        &msg,
        &["not UTF-8", "0xe9 at offset 3", "iconv -f LATIN1 -t UTF-8"],
    );
}

#[test]
fn a_corpus_too_short_for_the_block_says_which_split() {
    let (_, corpus) = load_bytes("tiny.txt", "x".repeat(40).as_bytes());
    let corpus = corpus.unwrap();
    let msg = data_error(corpus.check_block(64));
    assert_mentions(
        &msg,
        &["40 chars", "90% train split has 36", "--block 64 + 1"],
    );
    // 40 chars: train 36, val 4; block 3 needs 4 in each.
    corpus.check_block(3).unwrap();
    let msg = data_error(corpus.check_block(4));
    assert_mentions(&msg, &["10% validation split has 4", "smaller --block"]);
    assert!(matches!(corpus.check_block(0), Err(Error::Config(_))));
}

// ---------------------------------------------------------------------------------------
// tales

#[test]
fn tales_is_deterministic_sized_and_plausible() {
    let a = tales::generate(42, 50_000);
    let b = tales::generate(42, 50_000);
    assert_eq!(a.text, b.text);
    assert_eq!(a.nats, b.nats);
    assert_ne!(
        a.text,
        tales::generate(43, 50_000).text,
        "seeds 42 and 43 gave the same text"
    );

    let chars = a.text.chars().count();
    assert!(a.text.is_ascii(), "tales should be ASCII");
    assert!(
        (50_000..55_000).contains(&chars),
        "{chars} chars for a target of 50000"
    );
    assert!(
        a.text.lines().all(|l| l.len() <= 76),
        "a line is over 76 chars"
    );
    // Plausible: a few stories' worth of nats, far below ln(V) = 4.0 for a uniform guess.
    let floor = a.nats / chars as f64;
    assert!(floor > 0.05 && floor < 1.0, "floor {floor} nats/char");
}

#[test]
fn built_in_corpus_is_a_million_chars_with_a_floor() {
    let corpus = data::load("tales", 1337).unwrap();
    let chars = corpus.train.len() + corpus.val.len();
    assert!(
        (900_000..=1_100_000).contains(&chars),
        "{chars} chars, want 1,000,000 +- 10%"
    );
    assert_eq!(corpus.name, "tales");
    assert_eq!(corpus.train.len(), chars * 9 / 10);
    let floor = corpus.floor_nats.expect("tales knows its floor");
    assert!(floor > 0.05 && floor < 1.0, "floor {floor} nats/char");
    assert!(
        (40..80).contains(&corpus.vocab.len()),
        "V = {}",
        corpus.vocab.len()
    );
    corpus.check_block(64).unwrap();
}

/// The strong test: the text determines the choices. For every story of three samples,
/// a search over ALL choice sequences of the grammar finds exactly one that writes it, and
/// the parsed choices' nats add up to what generation counted. So `nats` is `-ln p(text)`
/// and `nats / chars` is a true floor (see the `tales` module docs).
#[test]
fn every_story_of_three_samples_parses_back_to_exactly_one_choice_sequence() {
    for seed in [0, 1, 2] {
        let t = tales::generate(seed, 20_000);
        let mut parsed_nats = 0.0;
        for (i, story) in t.text.split_terminator("\n\n").enumerate() {
            assert!(
                !story.is_empty() && !story.contains("\n\n"),
                "story {i}: {story:?}"
            );
            let parses = tales::parse(story);
            assert_eq!(
                parses.len(),
                1,
                "seed {seed} story {i} has {} parses:\n{story}\nfirst two: {:?}",
                parses.len(),
                parses.iter().map(|p| &p.choices).collect::<Vec<_>>()
            );
            parsed_nats += parses[0].nats;
        }
        assert!(
            (parsed_nats - t.nats).abs() < 1e-9 * t.nats,
            "seed {seed}: parsed {parsed_nats} nats, generation counted {}",
            t.nats
        );
    }
}

#[test]
fn text_outside_the_grammar_has_no_parse() {
    let t = tales::generate(5, 1);
    let story = t.text.trim_end();
    assert_eq!(tales::parse(story).len(), 1);
    assert!(tales::parse(&story.replace('.', "!")).is_empty());
    assert!(tales::parse(&format!("{story} Hello.")).is_empty());
    assert!(tales::parse("The Red Kite\nOnce upon a time").is_empty());
}

// ---------------------------------------------------------------------------------------
// sampler

#[test]
fn window_start_is_deterministic_in_range_and_uniform() {
    let (len, block) = (1064, 64); // 1000 valid starts
    assert_eq!(
        sampler::window_start(7, 3, 5, len, block),
        sampler::window_start(7, 3, 5, len, block)
    );
    assert_eq!(
        sampler::window_start(7, 3, 5, 65, 64),
        0,
        "one window: start 0"
    );

    // 100 buckets of 10 starts, 100,000 draws over (step, seq): 1,000 expected per bucket.
    let mut counts = [0u32; 100];
    for step in 0..1000u64 {
        for seq in 0..100u64 {
            let s = sampler::window_start(7, step, seq, len, block);
            assert!(
                s + block < len,
                "start {s} leaves no room for {block} + 1 tokens"
            );
            counts[s / 10] += 1;
        }
    }
    // Chi-square with 99 degrees of freedom: mean 99, standard deviation 14. A uniform
    // sampler exceeds 200 (7 sd) with probability far below 1e-9; a skewed one does not pass.
    let expected = 1000.0;
    let chi2: f64 = counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    assert!(
        chi2 < 200.0,
        "chi-square {chi2:.1} over 99 dof; counts {counts:?}"
    );
    // The window of a sequence moves from step to step and differs across sequences.
    assert_ne!(
        sampler::window_start(7, 0, 0, len, block),
        sampler::window_start(7, 1, 0, len, block)
    );
    assert_ne!(
        sampler::window_start(7, 0, 0, len, block),
        sampler::window_start(8, 0, 0, len, block)
    );
}

#[test]
fn workers_drawing_their_shares_get_exactly_the_global_batch() {
    let tokens: Vec<u32> = (0..500).collect(); // token = its position: windows are visible
    let (block, seed, step) = (16, 99, 41);
    let mut x = vec![0; 12 * block];
    let mut y = vec![0; 12 * block];
    sampler::fill_batch(&tokens, seed, step, 0..12, block, &mut x, &mut y);

    let (mut x0, mut y0) = (vec![0; 6 * block], vec![0; 6 * block]);
    let (mut x1, mut y1) = (vec![0; 6 * block], vec![0; 6 * block]);
    sampler::fill_batch(&tokens, seed, step, 0..6, block, &mut x0, &mut y0);
    sampler::fill_batch(&tokens, seed, step, 6..12, block, &mut x1, &mut y1);
    assert_eq!(
        [x0, x1].concat(),
        x,
        "inputs of shards 0..6 + 6..12 differ from 0..12"
    );
    assert_eq!(
        [y0, y1].concat(),
        y,
        "targets of shards 0..6 + 6..12 differ from 0..12"
    );

    for (r, (xr, yr)) in x.chunks(block).zip(y.chunks(block)).enumerate() {
        let start = sampler::window_start(seed, step, r as u64, tokens.len(), block);
        assert_eq!(xr[0] as usize, start, "row {r}");
        for t in 0..block {
            assert_eq!(
                xr[t] + 1,
                yr[t],
                "row {r} position {t}: targets are inputs shifted"
            );
            assert_eq!(
                xr[t] as usize,
                start + t,
                "row {r} position {t}: a contiguous window"
            );
        }
    }
}

#[test]
fn validation_windows_tile_the_split() {
    let tokens: Vec<u32> = (0..103).collect();
    let block = 9; // windows of 10 tokens: 10 of them, 3 tokens left over
    let n = sampler::val_windows(tokens.len(), block);
    assert_eq!(n, 10);
    let mut x = vec![0; n * block];
    let mut y = vec![0; n * block];
    sampler::fill_val(&tokens, 0..n, block, &mut x, &mut y);
    // Each window = its inputs plus its last target; laid end to end they are the split.
    let mut tiled = Vec::new();
    for (xr, yr) in x.chunks(block).zip(y.chunks(block)) {
        assert_eq!(&xr[1..], &yr[..block - 1], "targets are inputs shifted");
        tiled.extend_from_slice(xr);
        tiled.push(yr[block - 1]);
    }
    assert_eq!(tiled, tokens[..100]);
    // A range of windows matches the same rows of the full fill.
    let mut x2 = vec![0; 3 * block];
    let mut y2 = vec![0; 3 * block];
    sampler::fill_val(&tokens, 4..7, block, &mut x2, &mut y2);
    assert_eq!(x2, x[4 * block..7 * block]);
    assert_eq!(y2, y[4 * block..7 * block]);
}

#[test]
fn eval_subset_is_fixed_spread_and_in_range() {
    let (len, block) = (10_000, 63); // 156 windows
    let total = sampler::val_windows(len, block);
    assert_eq!(total, 156);
    let subset = sampler::eval_subset(len, block, 20);
    assert_eq!(subset, sampler::eval_subset(len, block, 20));
    assert_eq!(subset.len(), 20);
    assert!(subset.windows(2).all(|w| w[0] < w[1]), "{subset:?}");
    assert!(*subset.last().unwrap() < total);
    assert!(subset[0] < total / 20 && *subset.last().unwrap() >= total - total / 20);
    assert_eq!(
        sampler::eval_subset(len, block, 500),
        (0..total).collect::<Vec<_>>()
    );
    assert!(sampler::eval_subset(10, 63, 5).is_empty());
}

/// The same check over the whole default corpus (about 3,000 stories, a few seconds in
/// release mode): `cargo test --release --test data -- --ignored`.
#[test]
#[ignore]
fn the_whole_default_corpus_parses_uniquely() {
    let t = tales::generate(1337, data::TALES_CHARS);
    let mut parsed_nats = 0.0;
    for (i, story) in t.text.split_terminator("\n\n").enumerate() {
        let parses = tales::parse(story);
        assert_eq!(
            parses.len(),
            1,
            "story {i} has {} parses:\n{story}",
            parses.len()
        );
        parsed_nats += parses[0].nats;
    }
    assert!((parsed_nats - t.nats).abs() < 1e-9 * t.nats);
}
