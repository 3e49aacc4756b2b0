//! Generating text from a trained model, one character at a time.
//!
//! ```text
//!  context (last T chars) -> forward -> logits of the last position -> / temperature
//!        ^                                                               -> softmax
//!        +---------------- append the sampled char <------------------- sample
//! ```
//!
//! The forward pass always runs on a full window of T positions; when the context is
//! shorter, the positions after it hold padding. Causal attention means position i
//! never looks at positions after i, so the padding cannot change the logits we read.

use crate::data::Vocab;
use crate::model::{Gpt, Workspace};
use crate::rng::{Draw, SeedableRng, Xoshiro256StarStar};
use crate::Error;

/// The most characters one call samples: each takes a forward pass over a full window,
/// so a million already takes the default model many minutes.
pub const MAX_CHARS: usize = 1_000_000;

/// Continues `prompt` by `chars` characters; temperature 0 picks the likeliest char.
///
/// Returns the prompt and its continuation, and hands that text to `emit` as it grows: the
/// prompt once the arguments are checked, then each character as soon as it is sampled. The
/// command line prints them as they come, so a long sample (a few ms a character) shows its
/// progress; `|_| {}` just waits for the result.
///
/// A temperature that is negative or not a number, more than [`MAX_CHARS`] chars, or a
/// prompt with a char outside `vocab` is a one-line [`Error`] naming its flag.
pub fn generate(
    model: &Gpt,
    vocab: &Vocab,
    prompt: &str,
    chars: usize,
    temperature: f32,
    seed: u64,
    mut emit: impl FnMut(&str),
) -> Result<String, Error> {
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return Err(Error::Config(format!(
            "--temperature {temperature} must be a number >= 0 (1.0 samples the model as trained, 0 is greedy)"
        )));
    }
    if chars > MAX_CHARS {
        return Err(Error::Config(format!(
            "--chars {chars} is more than nanodist samples at once ({MAX_CHARS}, minutes of \
             text): use --chars {MAX_CHARS} or less"
        )));
    }
    let t = model.cfg.block_size;
    let v = model.cfg.vocab_size;
    let mut tokens = if prompt.is_empty() {
        // Start where a story would: after a newline when the corpus has one.
        vocab.encode("\n").unwrap_or_else(|_| vec![0])
    } else {
        vocab
            .encode(prompt)
            .map_err(|e| Error::Data(format!("--prompt cannot be encoded: {e}")))?
    };
    let mut out = if prompt.is_empty() {
        String::new()
    } else {
        prompt.to_string()
    };
    emit(&out);
    let mut ws = Workspace::new(&model.cfg, 1, t);
    let mut rng = Xoshiro256StarStar::seed_from_u64(seed);
    let mut window = vec![0u32; t];
    let mut probs = vec![0f32; v];
    for _ in 0..chars {
        let ctx = &tokens[tokens.len().saturating_sub(t)..];
        window[..ctx.len()].copy_from_slice(ctx);
        window[ctx.len()..].fill(0);
        model.forward(&mut ws, &window, None);
        let last = &ws.logits()[(ctx.len() - 1) * v..ctx.len() * v];
        let next = if temperature == 0.0 {
            argmax(last)
        } else {
            let max = last.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for (p, &l) in probs.iter_mut().zip(last) {
                // libm's exp makes the sampled text the same on every platform.
                *p = libm::expf((l - max) / temperature);
                sum += *p;
            }
            let mut r = rng.uniform() as f32 * sum;
            let mut pick = v - 1;
            for (i, &p) in probs.iter().enumerate() {
                if r < p {
                    pick = i;
                    break;
                }
                r -= p;
            }
            pick
        };
        tokens.push(next as u32);
        let ch = vocab.decode(&[next as u32]);
        emit(&ch);
        out.push_str(&ch);
    }
    Ok(out)
}

fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}
