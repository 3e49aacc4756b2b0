//! Every activation buffer of one forward + backward, allocated once.
//!
//! A [`Workspace`] belongs to one worker and one batch shape: `Workspace::new` allocates all
//! of it, and forward/backward only write into it. The forward fills it top to bottom;
//! the backward reads it bottom to top, using the `Scratch` buffers for the gradients that
//! flow between layers (the parameter gradients go to the caller's buffer instead).

use crate::config::ModelConfig;

/// Activations of one block. `N = B*T` rows; `x_in` is the previous block's `x_out`.
#[derive(Clone, Debug)]
pub(crate) struct BlockActs {
    /// (N,C) ln_1(x_in)
    pub ln1: Vec<f32>,
    /// (N) per-row mean of x_in
    pub ln1_mean: Vec<f32>,
    /// (N) per-row 1/std of x_in
    pub ln1_rstd: Vec<f32>,
    /// (3,H,N,hs) ln1 @ c_attn^T, head-major: each head's queries, keys, values in one
    /// (N,hs) block (see `attention`)
    pub qkv: Vec<f32>,
    /// (B,H,T,T) attention probabilities
    pub att: Vec<f32>,
    /// (N,C) attention output, heads side by side
    pub atty: Vec<f32>,
    /// (N,C) x_in + atty @ attn.c_proj^T
    pub x_mid: Vec<f32>,
    /// (N,C) ln_2(x_mid)
    pub ln2: Vec<f32>,
    /// (N) per-row mean of x_mid
    pub ln2_mean: Vec<f32>,
    /// (N) per-row 1/std of x_mid
    pub ln2_rstd: Vec<f32>,
    /// (N,4C) ln2 @ c_fc^T
    pub fch: Vec<f32>,
    /// (N,4C) gelu(fch)
    pub fcg: Vec<f32>,
    /// (N,C) x_mid + fcg @ mlp.c_proj^T
    pub x_out: Vec<f32>,
}

/// Gradients with respect to activations, reused by every block during backward.
#[derive(Clone, Debug)]
pub(crate) struct Scratch {
    /// (N,C) d loss / d (the residual stream at the current point of backward)
    pub dres: Vec<f32>,
    /// (N,C) d loss / d (a layernorm's output)
    pub dln: Vec<f32>,
    /// (H,N,hs) d loss / d atty, head-major (see `attention`)
    pub datty: Vec<f32>,
    /// (N,3C) d loss / d qkv
    pub dqkv: Vec<f32>,
    /// (B,H,T,T) d loss / d (attention scores), one head at a time
    pub datt: Vec<f32>,
    /// (N,4C) d loss / d fcg, turned into d loss / d fch by the GELU backward (in place)
    pub dfc: Vec<f32>,
    /// (N,V) d loss / d logits
    pub dlogits: Vec<f32>,
}

/// Every buffer forward and backward need for batches of `batch` sequences of `seq_len` tokens.
#[derive(Clone, Debug)]
pub struct Workspace {
    pub(crate) b: usize,
    pub(crate) t: usize,
    pub(crate) threads: usize,
    /// (B,T) the last forward's token ids
    pub(crate) inputs: Vec<u32>,
    /// (B,T) the last forward's targets, valid when `has_targets`
    pub(crate) targets: Vec<u32>,
    pub(crate) has_targets: bool,
    /// (N,C) x_0 = wte[inputs] + wpe
    pub(crate) encoded: Vec<f32>,
    pub(crate) blocks: Vec<BlockActs>,
    /// (N,C) ln_f(x_L), and its per-row mean and 1/std (N)
    pub(crate) lnf: Vec<f32>,
    pub(crate) lnf_mean: Vec<f32>,
    pub(crate) lnf_rstd: Vec<f32>,
    /// (N,V) lnf @ wte^T
    pub(crate) logits: Vec<f32>,
    /// (N) log-sum-exp of each row of logits
    pub(crate) lse: Vec<f32>,
    /// (N) cross-entropy of each token
    pub(crate) losses: Vec<f32>,
    pub(crate) scratch: Scratch,
}

impl Workspace {
    /// Buffers for `batch` sequences of `seq_len <= cfg.block_size` tokens (positions 0..seq_len).
    ///
    /// # Panics
    /// If `batch` or `seq_len` is 0, or `seq_len > cfg.block_size`.
    pub fn new(cfg: &ModelConfig, batch: usize, seq_len: usize) -> Self {
        assert!(
            batch > 0 && seq_len > 0,
            "empty batch ({batch} x {seq_len})"
        );
        assert!(
            seq_len <= cfg.block_size,
            "seq_len {seq_len} > block_size {}",
            cfg.block_size
        );
        let (b, t, c, h, v) = (batch, seq_len, cfg.n_embd, cfg.n_head, cfg.vocab_size);
        let n = b * t;
        let z = |len: usize| vec![0.0f32; len];
        let block = BlockActs {
            ln1: z(n * c),
            ln1_mean: z(n),
            ln1_rstd: z(n),
            qkv: z(n * 3 * c),
            att: z(b * h * t * t),
            atty: z(n * c),
            x_mid: z(n * c),
            ln2: z(n * c),
            ln2_mean: z(n),
            ln2_rstd: z(n),
            fch: z(n * 4 * c),
            fcg: z(n * 4 * c),
            x_out: z(n * c),
        };
        Workspace {
            b,
            t,
            threads: 1,
            inputs: vec![0; n],
            targets: vec![0; n],
            has_targets: false,
            encoded: z(n * c),
            blocks: vec![block; cfg.n_layer],
            lnf: z(n * c),
            lnf_mean: z(n),
            lnf_rstd: z(n),
            logits: z(n * v),
            lse: z(n),
            losses: z(n),
            scratch: Scratch {
                dres: z(n * c),
                dln: z(n * c),
                datty: z(n * c),
                dqkv: z(n * 3 * c),
                datt: z(b * h * t * t),
                dfc: z(n * 4 * c),
                dlogits: z(n * v),
            },
        }
    }

    /// The last forward's logits, (B,T,V) row-major.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// B: sequences per forward.
    pub fn batch(&self) -> usize {
        self.b
    }

    /// T: tokens per sequence (may be less than the model's block size).
    pub fn seq_len(&self) -> usize {
        self.t
    }

    /// Run each kernel on `n` threads of the current rayon pool ("op parallel"); 1 (the
    /// default) is the plain single-thread path a data-parallel worker uses.
    pub fn set_threads(&mut self, n: usize) {
        self.threads = n.max(1);
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    use super::*;
    use crate::config::TrainConfig;
    use crate::model::matmul::IN_GEMM;
    use crate::model::Gpt;
    use crate::optim::{clip_grad_norm, lr_at, AdamW};

    /// The unit tests' allocator: the system's, counting each thread's allocations made
    /// outside `gemm` (a count per thread, so tests running side by side do not mix).
    struct Counting;

    thread_local! {
        static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    }

    // SAFETY: every call goes to `System` unchanged; the count touches only a const
    // thread-local `Cell`, which neither allocates nor has a destructor.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if !IN_GEMM.get() {
                ALLOCATIONS.set(ALLOCATIONS.get() + 1);
            }
            // SAFETY: our caller's promises (a layout of non-zero size) are `System`'s.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from `alloc` above, i.e. from `System`, with this `layout`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// The promise of this module: after the first step, a training step (forward, backward,
    /// clipping, AdamW) allocates nothing, so its time is the kernels' alone. The first step
    /// may: attention grows its scratch for z^T then.
    #[test]
    fn a_training_step_allocates_nothing_after_the_first() {
        let cfg = ModelConfig::default();
        let (b, t) = (2, cfg.block_size);
        let mut model = Gpt::new(cfg.clone(), 1);
        let mut ws = Workspace::new(&cfg, b, t);
        let mut grads = vec![0.0; model.layout.len];
        let mut adam = AdamW::new(model.layout.len);
        let train = TrainConfig::default().optim;
        let tokens: Vec<u32> = (0..=b * t)
            .map(|i| (i * 7 % cfg.vocab_size) as u32)
            .collect();
        let (inputs, targets) = (&tokens[..b * t], &tokens[1..]);
        let mut step = |s: usize| {
            grads.fill(0.0);
            model.forward(&mut ws, inputs, Some(targets)).unwrap();
            model.backward(&mut ws, 1.0 / (b * t) as f32, &mut grads[..]);
            clip_grad_norm(&mut grads, train.grad_clip);
            adam.step(
                &mut model.params,
                &grads,
                &model.layout,
                lr_at(s, 2000, &train),
                &train,
            );
        };
        step(0);
        let before = ALLOCATIONS.get();
        for s in 1..4 {
            step(s);
        }
        let made = ALLOCATIONS.get() - before;
        assert_eq!(made, 0, "3 steps after the first made {made} allocations");
    }
}
