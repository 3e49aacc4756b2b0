//! Fuzz the data loader's text path: any bytes a data file could hold must give a corpus or
//! a clean one-line Err (empty, binary, cut-off or invalid UTF-8), never a panic.
//!
//! cargo install cargo-fuzz && cargo fuzz run data -- -max_total_time=60
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match nanodist::data::from_bytes("fuzz input", data.to_vec()) {
        Ok(corpus) => {
            // every char of the text is a token of its own vocabulary, split 90/10
            let n = corpus.train.len() + corpus.val.len();
            assert_eq!(corpus.train.len(), n * 9 / 10);
            let v = corpus.vocab.len() as u32;
            assert!(corpus.train.iter().chain(&corpus.val).all(|&t| t < v));
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
    }
});
