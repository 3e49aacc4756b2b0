//! Fuzz the checkpoint decoder: any bytes must give Ok or a clean Err, never a panic,
//! a hang, or an allocation the input does not justify.
//!
//! cargo install cargo-fuzz && cargo fuzz run checkpoint -- -max_total_time=60
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nanodist::checkpoint::decode(data, "fuzz input");
});
