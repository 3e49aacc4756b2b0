//! `tales`, the built-in corpus: short stories from a stochastic grammar, with a known entropy.
//!
//! [`generate`] writes stories (rules in `grammar/`) until the text reaches the asked
//! size, about 1 MB by default, in some 15 ms. The same seed gives the same
//! text on every machine, because every decision comes from one seeded
//! [`Xoshiro256StarStar`] stream through [`Draw::below`], whose values are fixed.
//!
//! ```text
//! The Golden Cup
//! Once upon a time, there was a kind girl named Anna. Every day, she played
//! with her friend Pip. Anna had a golden cup that she loved very much. Then,
//! Anna jumped up and down. "Be careful!" Pip said. The wind was cold. From
//! that day on, Anna and Pip were best friends.
//! ```
//!
//! `cargo run --release --example tales` prints more, with the corpus's figures.
//!
//! # The entropy floor
//!
//! Writing a story is a sequence of choices `c1, c2, ..., cn`; each is drawn from a
//! distribution the grammar states (uniform over 16 names, 2:1 for "another sentence", ...),
//! possibly depending on the earlier ones. So the probability of the whole sequence is the
//! product of the probabilities of its choices, and its information is
//!
//! ```text
//!   I(choices) = -ln p(c1) - ln p(c2 | c1) - ... - ln p(cn | c1..cn-1)    nats
//! ```
//!
//! [`Tales::nats`] is this sum over every choice of every story.
//!
//! The grammar is built so that **the text determines the choices**: no two choice
//! sequences write the same text. (Within a slot the alternatives are distinct strings;
//! a slot ends where fixed text or another slot begins, so one alternative cannot pass for
//! another plus what follows; sentence forms that may follow one another differ in their
//! words. "he" always means the hero, for instance, because if the friend could be "he" too,
//! two choices would write the same word.) Then the probability of the text *is* the
//! probability of its choices, and `nats` is exactly `-ln p(text)`.
//!
//! A character model `q` that predicts each char from the ones before it pays
//! `-ln q(x1) - ln q(x2 | x1) - ... = -ln q(text)` in total. Averaged over texts from the
//! source, `E[-ln q(text)] >= E[-ln p(text)]` (Gibbs' inequality: cross-entropy is at
//! least entropy), with equality only when `q` is the source itself. So
//!
//! ```text
//!   floor = nats / chars     (nats per char)
//! ```
//!
//! is the entropy rate of the source, in the units of the training loss (natural log, per
//! char): no model can beat it on average, and a perfect model of the grammar reaches it.
//! One sample's figure wanders a little around the rate: for the default 1 MB (about 3,000
//! stories) it is 0.157 to 0.158 nats/char over seeds 0 to 7, and the stories of the last
//! 10% (the validation split) land within about 1% of that.
//!
//! Had two paths written the same text, `p(text)` would be their *sum*, larger than either,
//! and `nats` would overstate the information: a good model could then go below the
//! "floor". [`parse`] searches every choice sequence that could have written a given story;
//! the tests run it on generated stories (all 3,000 of the default corpus in an `--ignored`
//! test) and find exactly one each time, with the nats that generation counted.
//!
//! Caveat: the floor assumes the model sees the whole past. A transformer with a block of
//! T chars sees at most T - 1 of them, and training and validation windows start cold. The
//! hero's name, the friend's name and the object are chosen once per story and then
//! repeated; a model that has lost sight of them pays for them again. Its best possible
//! loss therefore sits above the floor, the more so the smaller T.

use super::grammar::{self, Chooser, Writer};
use crate::rng::{Draw, SeedableRng, Xoshiro256StarStar};

/// Lines of story text are wrapped before this many chars.
const WIDTH: usize = 76;

/// A generated corpus and its information content.
#[derive(Clone, Debug)]
pub struct Tales {
    /// The stories, each a title line and a wrapped paragraph, followed by a blank line.
    pub text: String,
    /// Total `-ln p` of every choice made to write `text`, in nats.
    pub nats: f64,
}

/// Writes whole stories, with dice seeded by `seed`, until the text has at least
/// `target_chars` chars (it overshoots by less than one story, about 500 chars).
///
/// The text is ASCII, so its chars are its bytes.
///
/// # Examples
/// ```
/// let tales = nanodist::data::tales::generate(7, 5_000);
/// assert!(tales.text.len() >= 5_000 && tales.text.len() < 6_000);
/// let floor = tales.nats / tales.text.len() as f64; // nats per char
/// assert!(floor > 0.05 && floor < 1.0, "{floor}");
/// ```
pub fn generate(seed: u64, target_chars: usize) -> Tales {
    let mut dice = Dice {
        rng: Xoshiro256StarStar::seed_from_u64(seed),
        nats: 0.0,
    };
    let mut story = String::new();
    let mut text = String::with_capacity(target_chars + 1024);
    while text.len() < target_chars {
        story.clear();
        grammar::story(&mut Writer::new(&mut dice, &mut story));
        wrap(&story, &mut text);
        text.push_str("\n\n");
    }
    Tales {
        text,
        nats: dice.nats,
    }
}

/// The generator's chooser: draws each choice and counts its information.
struct Dice {
    rng: Xoshiro256StarStar,
    nats: f64,
}

impl Chooser for Dice {
    fn choose(&mut self, weights: &[u32], _written: usize) -> usize {
        let total: u32 = weights.iter().sum();
        let mut r = self.rng.below(total as usize) as u32;
        for (i, &w) in weights.iter().enumerate() {
            if r < w {
                // libm's ln makes the reported floor the same bits on every platform.
                self.nats += libm::log(total as f64 / w as f64);
                return i;
            }
            r -= w;
        }
        unreachable!("r < total = sum of weights")
    }
}

/// Appends `story` (a title line, then one long line) with the long line broken at spaces
/// so that lines stay under [`WIDTH`] chars where the words allow. The breaks are a function
/// of the text (no choices), and [`unwrap`] undoes them.
fn wrap(story: &str, out: &mut String) {
    let (title, body) = story.split_once('\n').unwrap_or((story, ""));
    out.push_str(title);
    out.push('\n');
    let mut line = 0;
    for (i, word) in body.split(' ').enumerate() {
        if i > 0 {
            if line + 1 + word.len() > WIDTH {
                out.push('\n');
                line = 0;
            } else {
                out.push(' ');
                line += 1;
            }
        }
        out.push_str(word);
        line += word.len();
    }
}

/// The story as the grammar wrote it: the title line, then the body on one line.
fn unwrap(story: &str) -> String {
    match story.split_once('\n') {
        Some((title, body)) => format!("{title}\n{}", body.replace('\n', " ")),
        None => story.to_string(),
    }
}

/// One way the grammar could have written a story.
#[derive(Clone, Debug, PartialEq)]
pub struct Parse {
    /// The index picked at each choice, in the order the grammar asked.
    pub choices: Vec<usize>,
    /// Total `-ln p` of those choices.
    pub nats: f64,
}

/// Every choice sequence with which the grammar writes exactly `story` (one story as it
/// appears in [`Tales::text`], without the blank line after it), stopping at two.
///
/// For a story from [`generate`] the answer has one element: the choices the dice made.
/// Two would mean the text hides a choice, and the entropy floor would be wrong.
///
/// How: a depth-first search over choice prefixes. Each node replays the grammar with a
/// script of choices; at the first choice past the script it notes how many options there
/// are and how much text was written, and the node's children (one per option) are kept
/// only if that text is a prefix of the story. Wrong turns die at their first wrong char.
///
/// ```
/// use nanodist::data::tales::{generate, parse};
/// let tales = generate(1, 1);
/// let story = tales.text.trim_end();
/// let parses = parse(story);
/// assert_eq!(parses.len(), 1);
/// assert!((parses[0].nats - tales.nats).abs() < 1e-9);
/// ```
pub fn parse(story: &str) -> Vec<Parse> {
    let target = unwrap(story);
    let mut found = Vec::new();
    let mut out = String::new();
    let mut stack: Vec<Vec<usize>> = vec![Vec::new()];
    while let Some(script) = stack.pop() {
        out.clear();
        let mut replay = Script {
            choices: &script,
            next: 0,
            nats: 0.0,
            open: None,
        };
        grammar::story(&mut Writer::new(&mut replay, &mut out));
        match replay.open {
            None if out == target => {
                let nats = replay.nats;
                found.push(Parse {
                    choices: script,
                    nats,
                });
                if found.len() == 2 {
                    break;
                }
            }
            None => {}
            Some((options, written)) if target.starts_with(&out[..written]) => {
                // Pushed in reverse so that option 0 is explored first.
                for c in (0..options).rev() {
                    let mut child = script.clone();
                    child.push(c);
                    stack.push(child);
                }
            }
            Some(_) => {}
        }
    }
    found
}

/// The parser's chooser: replays a script, then notes the first choice past its end.
struct Script<'s> {
    choices: &'s [usize],
    next: usize,
    nats: f64,
    /// `(number of options, bytes written)` at the first choice past the script.
    open: Option<(usize, usize)>,
}

impl Chooser for Script<'_> {
    fn choose(&mut self, weights: &[u32], written: usize) -> usize {
        if let Some(&c) = self.choices.get(self.next) {
            self.next += 1;
            let total: u32 = weights.iter().sum();
            // libm's ln, as in `Dice`: the same bits as generation counted, on every platform.
            self.nats += libm::log(total as f64 / weights[c] as f64);
            return c;
        }
        if self.open.is_none() {
            self.open = Some((weights.len(), written));
        }
        // Any option will do to finish the run: its text past `written` is not looked at.
        // Every loop in the grammar is bounded, so the run ends.
        0
    }
}
