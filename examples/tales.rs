//! `cargo run --release --example tales`
//!
//! Generates the built-in corpus, prints its first stories and its figures, and parses a
//! story back into the grammar's choices. Shortened expected output:
//!
//! ```text
//! Generating the tales corpus for seed 1337 (target 1000000 chars)...
//!
//! The Funny Bell
//! Once upon a time, there was a clever bear named Leo. Leo had a friend named
//! Mia. Mia gave Leo a funny bell as a present. Then, a mouse ran across the
//! ...
//!
//! size        1000116 chars in 3011 stories, generated in 13 ms
//! vocabulary  57 chars: "\n !\"',.?ABCDEFGHIJKLMNOPRSTUWYZabcdefghijklmnopqrstuvwxyz"
//! information 157295.7 nats in all choices
//! floor       0.1573 nats/char: no model of these stories can average a lower loss
//!
//! Parsing story 1 back: 1 way to write it, 26 choices, 44.4 nats (generation counted 44.4).
//! ```

use std::time::Instant;

use nanodist::data::{tales, Vocab, TALES_CHARS};

fn main() {
    let seed = 1337;
    println!("Generating the tales corpus for seed {seed} (target {TALES_CHARS} chars)...\n");
    let start = Instant::now();
    let corpus = tales::generate(seed, TALES_CHARS);
    let ms = start.elapsed().as_secs_f64() * 1e3;

    let stories: Vec<&str> = corpus.text.split_terminator("\n\n").collect();
    for story in &stories[..3] {
        println!("{story}\n");
    }

    let chars = corpus.text.chars().count();
    let vocab = Vocab::from_text(&corpus.text);
    println!(
        "size        {chars} chars in {} stories, generated in {ms:.0} ms",
        stories.len()
    );
    println!("vocabulary  {} chars: {:?}", vocab.len(), vocab.as_string());
    println!("information {:.1} nats in all choices", corpus.nats);
    println!(
        "floor       {:.4} nats/char: no model of these stories can average a lower loss",
        corpus.nats / chars as f64
    );

    // The floor is only a floor if the text gives away every choice: check one story.
    let first = tales::generate(seed, 1);
    let parses = tales::parse(first.text.trim_end());
    println!(
        "\nParsing story 1 back: {} way to write it, {} choices, {:.1} nats (generation counted {:.1}).",
        parses.len(),
        parses[0].choices.len(),
        parses[0].nats,
        first.nats
    );
}
