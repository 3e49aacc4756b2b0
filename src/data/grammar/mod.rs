//! The `tales` grammar: how a story is written, one recorded choice at a time.
//!
//! A story is written left to right by a [`Writer`], which asks a [`Chooser`] for every
//! random decision. The same rules run in two modes (see [`super::tales`]): with dice, to
//! generate the corpus, and with a script, to parse a story back into its choices.
//!
//! ```text
//!   Tom and the Red Kite                                  title: hero?, adjective, noun
//!   Once upon a time, there was a shy boy named Tom.      opening
//!   He had a friend named Lily.                           the friend
//!   One day, Tom found a red kite under a tree.           the object of the title
//!   Then, he ran all the way to the park. "Wow!" ...      2 to 8 middle sentences
//!   From that day on, Tom and Lily were best friends.     ending, maybe " The end."
//! ```
//!
//! The rules keep one promise, on which the entropy floor rests: *the text shows every
//! choice*. The alternatives of a slot are distinct strings, each slot ends where a fixed
//! string or another slot begins, and sentence forms that could follow one another differ
//! in their words. When a slot is added, `tales::parse` (and its tests) check the promise.
//!
//! Files: this one holds the machinery ([`Chooser`], [`Writer`]), `story.rs` the rules,
//! `words.rs` the word lists.

mod story;
mod words;

pub(crate) use story::story;

/// A source of decisions: dice when generating, a script when parsing.
///
/// Rust note: the rules take `&mut dyn Chooser`, so one copy of the grammar serves both
/// modes, and the parser cannot drift from the generator.
pub(crate) trait Chooser {
    /// Picks an index into `weights`; option `i` has probability `weights[i] / sum`.
    /// `written` is how many bytes of the story exist when the choice is made.
    fn choose(&mut self, weights: &[u32], written: usize) -> usize;
}

/// The story being written and where its decisions come from.
pub(crate) struct Writer<'a> {
    out: &'a mut String,
    chooser: &'a mut dyn Chooser,
}

/// Weights for a uniform choice among up to 32 options.
const UNIFORM: [u32; 32] = [1; 32];

impl<'a> Writer<'a> {
    pub(crate) fn new(chooser: &'a mut dyn Chooser, out: &'a mut String) -> Self {
        Writer { out, chooser }
    }

    fn weighted(&mut self, weights: &[u32]) -> usize {
        self.chooser.choose(weights, self.out.len())
    }

    fn pick(&mut self, n: usize) -> usize {
        self.weighted(&UNIFORM[..n])
    }

    /// One of `words`, uniformly, not yet written.
    fn one(&mut self, words: &[&'static str]) -> &'static str {
        words[self.pick(words.len())]
    }

    /// Writes one of `words`, uniformly.
    fn say(&mut self, words: &[&'static str]) {
        let word = self.one(words);
        self.put(word);
    }

    fn put(&mut self, s: &str) {
        self.out.push_str(s);
    }

    /// Writes the pieces one after the other (fixed text and words already chosen).
    fn put_all(&mut self, pieces: &[&str]) {
        for piece in pieces {
            self.out.push_str(piece);
        }
    }

    /// Writes `s`, with its first letter upper-cased when it starts a sentence.
    fn put_cap(&mut self, s: &str, cap: bool) {
        let mut chars = s.chars();
        match chars.next() {
            Some(first) if cap => {
                self.out.push(first.to_ascii_uppercase());
                self.out.push_str(chars.as_str());
            }
            _ => self.out.push_str(s),
        }
    }

    /// Turns a quote's closing full stop into a comma, as before `said Tom`
    /// (a function of the text so far: no choice).
    fn comma_for_full_stop(&mut self) {
        if self.out.ends_with('.') {
            self.out.pop();
            self.out.push(',');
        }
    }

    /// Writes "a word" or "an word" (the article is a function of the word: no choice).
    fn put_a(&mut self, word: &str, cap: bool) {
        let vowel = word.starts_with(['a', 'e', 'i', 'o', 'u']);
        self.put_cap(if vowel { "an " } else { "a " }, cap);
        self.put(word);
    }
}
