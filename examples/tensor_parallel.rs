//! One transformer block, split over 2 workers as Megatron-LM splits it, forward and
//! backward, narrated collective by collective.
//!
//! ```text
//! cargo run --release --example tensor_parallel
//! ```
//!
//! Shortened expected output:
//!
//! ```text
//! == a block of C = 32 channels, H = 4 heads, split over 2 workers ==
//! worker 0 holds:
//!   transformer.h.0.attn.c_attn.weight   [96, 32] -> [48, 32]  q, k, v rows of heads 0 1
//!   transformer.h.0.attn.c_proj.weight   [32, 32] -> [32, 16]  the columns of heads 0 1
//!   ...
//! == without --sp ==
//! forward, worker 0:
//!   ln_1 on 32 of the 32 rows; f: identity (every worker already has every row)
//!   1. all-reduce in block 0: g after attn.c_proj: the heads' partial sums
//!   2. all-reduce in block 0: g after mlp.c_proj: the hidden units' partial sums
//! backward, worker 0:
//!   3. all-reduce in block 0: f backward of c_fc: the input gradient's parts
//!   4. all-reduce in block 0: f backward of c_attn
//! loss 2.7463 on worker 0, 2.7463 on worker 1; one worker alone: 2.7463
//! gradient of the whole model, consolidated: largest difference from one worker's 4.1e-8
//! worker 0 sent 4096 floats in its tensor group (4 collectives)
//!
//! == with --sp ==
//! forward, worker 0:
//!   ln_1 on 16 of the 32 rows; f: all-gather the other worker's rows, since my heads need every token
//!   1. all-gather in block 0: f before c_attn
//!   2. reduce-scatter in block 0: g after attn.c_proj: the heads' partial sums
//!   ...
//!   9. all-reduce after the blocks: the whole copies' gradients (each worker's came from its own rows)
//! ...
//! worker 0 sent 5216 floats in its tensor group (9 collectives)
//! ```

use nanodist::collective::{group, Algorithm};
use nanodist::config::ModelConfig;
use nanodist::model::{Gpt, ParamLayout, Workspace};
use nanodist::parallel::tensor::{consolidate, local_layout, shard, Ops, TensorParallel};
use nanodist::trace::{Clock, Phase};

const TP: usize = 2;
const B: usize = 2;

fn main() {
    let cfg = ModelConfig {
        vocab_size: 16,
        block_size: 16,
        n_layer: 1,
        n_head: 4,
        n_embd: 32,
    };
    let model = Gpt::new(cfg.clone(), 1);
    let n = B * cfg.block_size;
    let tokens: Vec<u32> = (0..=n).map(|i| (i * 5 % cfg.vocab_size) as u32).collect();
    let (x, y) = (&tokens[..n], &tokens[1..]);

    println!(
        "== a block of C = {} channels, H = {} heads, split over {TP} workers ==",
        cfg.n_embd, cfg.n_head
    );
    let (full, half) = (ParamLayout::new(&cfg), local_layout(&cfg, TP));
    println!("worker 0 holds:");
    let said = [
        "q, k, v rows of heads 0 1",
        "the columns of heads 0 1",
        "hidden units 0 .. 64",
        "the columns of hidden units 0 .. 64",
    ];
    let split = (full.tensors.iter().zip(&half.tensors)).filter(|(f, h)| f.shape != h.shape);
    for ((f, h), what) in split.zip(said) {
        println!("  {:<36} {:?} -> {:?}  {what}", f.name, f.shape, h.shape);
    }
    println!("  (and whole copies of wte, wpe, ln_1, ln_2, ln_f: V = 16 is tiny)");

    // one worker alone, the reference
    let mut ws = Workspace::new(&cfg, B, cfg.block_size);
    let loss = model.forward(&mut ws, x, Some(y)).unwrap();
    let mut want = vec![0.0; model.layout.len];
    let scale = 1.0 / n as f32;
    model.backward(&mut ws, scale, &mut want);

    for sp in [false, true] {
        println!("\n== {} ==", if sp { "with --sp" } else { "without --sp" });
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (group(TP).into_iter())
                .map(|comm| {
                    let (cfg, model) = (&cfg, &model);
                    s.spawn(move || {
                        let rank = comm.rank();
                        let local = shard(&model.params, cfg, TP, rank);
                        let mut ops = Ops::new(comm, sp, Algorithm::Ring);
                        ops.clock = Some(Clock::start());
                        let mut tp = TensorParallel::new(cfg, B, cfg.block_size, ops);
                        let loss = tp.forward(&local, x, Some(y)).unwrap().unwrap();
                        let forward = std::mem::take(&mut tp.ops.spans);
                        let mut grads = vec![0.0; local.len()];
                        tp.backward(&local, scale, &mut grads).unwrap();
                        let backward = std::mem::take(&mut tp.ops.spans);
                        let sent = tp.ops.floats_sent;
                        let full = consolidate(&grads, cfg, &mut tp.ops.comm).unwrap();
                        (loss, forward, backward, sent, full)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let (l0, forward, backward, sent, got) = &results[0];
        let rows = if sp { n / TP } else { n };
        println!("forward, worker 0:");
        println!(
            "  ln_1 on {rows} of the {n} rows; f: {}",
            if sp {
                "all-gather the other worker's rows, since my heads need every token"
            } else {
                "identity (every worker already has every row)"
            }
        );
        let why_forward = [
            "f before c_attn",
            "g after attn.c_proj: the heads' partial sums",
            "f before c_fc",
            "g after mlp.c_proj: the hidden units' partial sums",
        ];
        narrate(forward, sp, &why_forward, 0);
        println!("backward, worker 0:");
        let why_backward = [
            "g backward into mlp.c_proj",
            "f backward of c_fc: the input gradient's parts",
            "g backward into attn.c_proj",
            "f backward of c_attn",
            "the whole copies' gradients (each worker's came from its own rows)",
        ];
        narrate(backward, sp, &why_backward, forward.len());
        let loss_1 = results[1].0;
        println!("loss {l0:.4} on worker 0, {loss_1:.4} on worker 1; one worker alone: {loss:.4}");
        let worst = (got.iter().zip(&want))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!("gradient of the whole model, consolidated: largest difference from one worker's {worst:.1e}");
        println!(
            "worker 0 sent {sent} floats in its tensor group ({} collectives)",
            forward.len() + backward.len()
        );
    }
}

/// Prints each collective span with the reason for it; without `--sp` the f of the forward
/// and the g of the backward are identities and send nothing, so the reasons skip them.
fn narrate(spans: &[nanodist::trace::Span], sp: bool, why: &[&str], first: usize) {
    let mut reasons = why.iter().filter(|w| {
        sp || !(w.starts_with("f before")
            || w.starts_with("g backward")
            || w.starts_with("the whole"))
    });
    for (i, s) in spans.iter().enumerate() {
        let Phase::Tensor { layer, op } = s.phase else {
            continue;
        };
        let why = reasons.next().unwrap_or(&"");
        // (the whole copies' sum comes after the last block: its layer is the block count)
        let at = if layer == 0 {
            "in block 0"
        } else {
            "after the blocks"
        };
        println!("  {}. {op} {at}: {why}", first + i + 1);
    }
}
