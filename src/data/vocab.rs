//! The character vocabulary: token `i` is the `i`-th distinct char of the corpus, in sorted order.
//!
//! This is what nanoGPT's `shakespeare_char/prepare.py` does: `chars = sorted(set(text))`.
//! The vocabulary is small (65 chars for Shakespeare, about 60 for `tales`), every string
//! over it can be encoded, and nothing is ever merged or split: one char, one token.
//!
//! ```text
//!   text    "Tom ran."
//!   vocab   [' ', '.', 'T', 'a', 'm', 'n', 'o', 'r']   sorted distinct chars
//!   ids     [ 2,   6,   4,   0,   7,   3,   5,   1 ]   position of each char in vocab
//! ```

use crate::Error;

/// The sorted set of distinct chars of a corpus; a char's token id is its index.
///
/// # Examples
/// ```
/// use nanodist::data::Vocab;
/// let vocab = Vocab::from_text("hello");
/// assert_eq!(vocab.as_string(), "ehlo");
/// let ids = vocab.encode("hole").unwrap();
/// assert_eq!(ids, vec![1, 3, 2, 0]);
/// assert_eq!(vocab.decode(&ids), "hole");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    /// The chars, sorted and distinct: `chars[id]` is the char of token `id`.
    chars: Vec<char>,
    /// Fast path for ASCII: `ascii[c as usize]` is the id of `c`, or `NONE`.
    ascii: [u32; 128],
}

/// Marks an ASCII char that is not in the vocabulary.
const NONE: u32 = u32::MAX;

impl Vocab {
    /// The vocabulary of `text`: its distinct chars, sorted by code point.
    pub fn from_text(text: &str) -> Vocab {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Vocab::from_sorted(chars)
    }

    /// Rebuilds a vocabulary stored with [`Vocab::as_string`] (checkpoint metadata).
    ///
    /// The string must be non-empty, sorted and without repeats, as `as_string` writes it;
    /// anything else means the stored metadata was damaged or written by something else.
    pub fn from_chars(chars: &str) -> Result<Vocab, Error> {
        let chars: Vec<char> = chars.chars().collect();
        if chars.is_empty() {
            return Err(Error::Data(
                "the stored vocabulary is empty: the checkpoint metadata is damaged; \
                 train again or use another checkpoint"
                    .into(),
            ));
        }
        if let Some(i) = (1..chars.len()).find(|&i| chars[i - 1] >= chars[i]) {
            return Err(Error::Data(format!(
                "the stored vocabulary is not sorted and distinct ({} then {} at position {i}): \
                 the checkpoint metadata is damaged; train again or use another checkpoint",
                show(chars[i - 1]),
                show(chars[i]),
            )));
        }
        Ok(Vocab::from_sorted(chars))
    }

    fn from_sorted(chars: Vec<char>) -> Vocab {
        let mut ascii = [NONE; 128];
        for (id, &c) in chars.iter().enumerate() {
            if c.is_ascii() {
                ascii[c as usize] = id as u32;
            }
        }
        Vocab { chars, ascii }
    }

    /// The chars in token order, for storing (inverse of [`Vocab::from_chars`]).
    pub fn as_string(&self) -> String {
        self.chars.iter().collect()
    }

    /// V, the number of tokens.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// True when there are no tokens at all (the vocabulary of an empty text).
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The token id of one char, if it is in the vocabulary.
    fn id(&self, c: char) -> Option<u32> {
        if c.is_ascii() {
            let id = self.ascii[c as usize];
            (id != NONE).then_some(id)
        } else {
            self.chars.binary_search(&c).ok().map(|i| i as u32)
        }
    }

    /// The token ids of `text`, one per char.
    ///
    /// A char the vocabulary does not hold (typically in a sampling prompt) is an
    /// [`Error::Data`] naming the char and its position.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        let mut ids = Vec::with_capacity(text.len());
        for (pos, c) in text.chars().enumerate() {
            match self.id(c) {
                Some(id) => ids.push(id),
                None => {
                    return Err(Error::Data(format!(
                        "char {} at position {pos} is not in the vocabulary of {} chars the \
                         model was trained on: remove or replace it (the vocabulary is {:?})",
                        show(c),
                        self.len(),
                        self.as_string(),
                    )))
                }
            }
        }
        Ok(ids)
    }

    /// The text of `ids`.
    ///
    /// # Panics
    /// If an id is not below [`Vocab::len`]: ids come from this vocabulary or from a model
    /// with V outputs, so an out-of-range id is a bug, not bad input.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|&id| {
                assert!(
                    (id as usize) < self.chars.len(),
                    "token id {id} out of range for a vocabulary of {} chars",
                    self.chars.len()
                );
                self.chars[id as usize]
            })
            .collect()
    }
}

/// A char quoted for an error message on one line: printable ASCII as itself, anything
/// else (newline, accents, emoji) as a Rust escape such as `'\u{e9}'`.
pub(crate) fn show(c: char) -> String {
    if c.is_ascii_graphic() || c == ' ' {
        format!("'{c}'")
    } else if c.is_ascii() {
        format!("'{}'", c.escape_default())
    } else {
        format!("'{}'", c.escape_unicode())
    }
}
