//! The data: chars to tokens, the train/validation split, and who reads which window.
//!
//! **Tokens are chars.** The vocabulary is the sorted set of distinct chars of the corpus
//! ([`Vocab`]), as in nanoGPT's `shakespeare_char`: V is small (about 60), nothing is
//! learned before training, and any sample decodes back to text one char per token.
//!
//! **The split is by position.** The first 90% of the token stream (`n * 9 / 10` tokens,
//! rounded down) is for training, the last 10% for validation. A window never straddles
//! the two, so validation text is text the model never trained on.
//!
//! ```text
//!   corpus  |<---------------- train: 90% ---------------->|<- val: 10% ->|
//!   train   random windows of T+1 tokens, new ones every step
//!   val     |T+1|T+1|T+1|...  fixed non-overlapping windows, the last partial one unused
//! ```
//!
//! **Batches are addressed, not streamed.** A global batch is B windows; the window of
//! sequence `s` at optimizer step `k` starts at `window_start(seed, k, s)`, a pure hash of
//! the three numbers ([`sampler`]). Nothing is shared between workers and nothing has to
//! be replayed on resume: worker `w` of `N` computes its rows directly.
//!
//! ```text
//!   step k, B = 6, N = 3 workers
//!   sequence   0    1  |  2    3  |  4    5
//!              worker 0   worker 1   worker 2     same windows as one worker drawing 0..6
//! ```
//!
//! [`load`] gives a [`Corpus`]: `"tales"` is the built-in generated corpus ([`tales`]), any
//! other spec is the path of a UTF-8 text file (write `./tales` for a file named `tales`)
//! of at most [`MAX_FILE_BYTES`]: only a regular file is read, so `/dev/zero` or a FIFO is
//! refused at once rather than read without end.

mod file;
mod grammar;
pub mod sampler;
pub mod tales;
pub mod vocab;

pub use file::{text_from_bytes, MAX_FILE_BYTES};
pub use sampler::{eval_subset, fill_batch, fill_val, val_windows, window_start};
pub use tales::Tales;
pub use vocab::Vocab;

use crate::Error;

/// Size of the built-in corpus, in chars (the generator overshoots by under one story).
pub const TALES_CHARS: usize = 1_000_000;

/// A tokenised corpus, split for training and validation.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// `"tales"` or the file path, for messages and the run's config.
    pub name: String,
    /// The distinct chars of the whole corpus (both splits).
    pub vocab: Vocab,
    /// The first 90% of the tokens.
    pub train: Vec<u32>,
    /// The last 10% of the tokens.
    pub val: Vec<u32>,
    /// The corpus's entropy in nats per char, when known (for `tales`): a lower bound on
    /// the average loss of any model (see [`tales`] for why, and for its caveat).
    pub floor_nats: Option<f64>,
}

/// Loads the corpus named by `spec`: `"tales"` generates the built-in stories with `seed`;
/// anything else is read as a UTF-8 text file (`seed` is then unused).
///
/// # Examples
/// ```no_run
/// let corpus = nanodist::data::load("tales", 1337)?;
/// println!("{} chars, V = {}", corpus.train.len() + corpus.val.len(), corpus.vocab.len());
/// # Ok::<(), nanodist::Error>(())
/// ```
pub fn load(spec: &str, seed: u64) -> Result<Corpus, Error> {
    if spec == "tales" {
        let tales = tales::generate(seed, TALES_CHARS);
        let floor = tales.nats / tales.text.chars().count() as f64;
        Ok(Corpus::from_text("tales", &tales.text, Some(floor)))
    } else {
        let text = file::read_text(spec)?;
        Ok(Corpus::from_text(spec, &text, None))
    }
}

/// The corpus in the bytes of a data file: [`text_from_bytes`], then
/// [`Corpus::from_text`]. `name` is the file's path, for messages. Any bytes give a corpus
/// or a one-line error, never a panic (`fuzz/fuzz_targets/data.rs` checks that).
pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Corpus, Error> {
    let text = text_from_bytes(name, bytes)?;
    Ok(Corpus::from_text(name, &text, None))
}

impl Corpus {
    /// Tokenises `text` with its own vocabulary and splits it 90/10.
    pub fn from_text(name: &str, text: &str, floor_nats: Option<f64>) -> Corpus {
        let vocab = Vocab::from_text(text);
        let mut train = vocab
            .encode(text)
            .expect("every char of a text is in the text's own vocabulary");
        let val = train.split_off(train.len() * 9 / 10);
        Corpus {
            name: name.to_string(),
            vocab,
            train,
            val,
            floor_nats,
        }
    }

    /// Checks that both splits hold at least one window of `block + 1` tokens
    /// (`block` inputs and the target after the last).
    ///
    /// The message names `--block`, the flag of `nanodist train`; other commands that
    /// train (`bench`) use the default block, so for them the remedy is the longer file.
    pub fn check_block(&self, block: usize) -> Result<(), Error> {
        if block == 0 {
            return Err(Error::Config(
                "--block 0 leaves no context to predict from: use --block 1 or more (default 64)"
                    .into(),
            ));
        }
        let chars = self.train.len() + self.val.len();
        for (split, len, what) in [
            ("90% train", self.train.len(), "training"),
            ("10% validation", self.val.len(), "validation"),
        ] {
            // `len <= block` is `len < block + 1` without the overflow at usize::MAX
            if len <= block {
                return Err(Error::Data(format!(
                    "data {} has {chars} chars, so its {split} split has {len}, fewer than \
                     --block {block} + 1 needed for one {what} window: use a longer \
                     file, or (in nanodist train) a smaller --block",
                    self.name
                )));
            }
        }
        Ok(())
    }
}
