//! The flat parameter layout: every weight of the GPT in ONE `Vec<f32>`, with named views.
//!
//! Parameters, gradients and AdamW's two moments all share this layout, so one offset names
//! the same weight in all four buffers, and an all-reduce is a loop over one slice.
//!
//! ```text
//!  offset 0                                                               len
//!  |                                                                        |
//!  [ wte (V,C) | wpe (T,C) | block 0 | block 1 | ... | block L-1 | ln_f (C) ]
//!                             |
//!                             v
//!        [ ln_1 (C) | c_attn (3C,C) | attn.c_proj (C,C) | ln_2 (C) | c_fc (4C,C) | mlp.c_proj (C,4C) ]
//!
//!  backward finishes:  ln_f + head  ->  block L-1  ->  ...  ->  block 0  ->  wte, wpe
//!  finished gradients:                          [ ........ growing suffix ........ ]
//!                                         <---- moves toward offset 0 as backward runs
//! ```
//!
//! Why this order: backward visits the network from the loss back to the embeddings, so the
//! part of the gradient buffer that backward will never write again is always a *suffix*
//! `[from, len)` that grows toward offset 0. A data-parallel trainer can all-reduce that
//! suffix bucket by bucket while backward is still working on the prefix. The token embedding
//! `wte` also serves as the output head (weight tying); it gets gradient first from the head
//! and last from the embedding lookup, and living at offset 0 it stays in the open prefix.
//!
//! Weights are stored (out, in), as PyTorch's `nn.Linear` stores them; names follow nanoGPT's
//! `state_dict` with `bias=False`.

use std::ops::Range;

use crate::config::ModelConfig;

/// One named tensor inside the flat buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// nanoGPT's `state_dict` name, e.g. `transformer.h.0.attn.c_attn.weight`.
    pub name: String,
    /// Its shape, (out, in) for linear layers.
    pub shape: Vec<usize>,
    /// Where it starts in the flat buffer.
    pub offset: usize,
    /// Number of floats: the product of `shape`.
    pub len: usize,
    /// Whether AdamW applies weight decay: tensors with two or more dimensions (matrices and
    /// the embeddings, as nanoGPT does), not the LayerNorm gains.
    pub decay: bool,
}

/// Every tensor of the model, in buffer order (offsets ascending, no gaps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamLayout {
    /// The tensors, in the order drawn in the module docs.
    pub tensors: Vec<TensorInfo>,
    /// Total number of floats, `cfg.num_params()`.
    pub len: usize,
}

impl ParamLayout {
    /// The layout for a model shape.
    ///
    /// ```
    /// use nanodist::{config::ModelConfig, model::ParamLayout};
    /// let cfg = ModelConfig::default();
    /// let layout = ParamLayout::new(&cfg);
    /// assert_eq!(layout.len, cfg.num_params());
    /// assert_eq!(layout.get("transformer.wte.weight").unwrap().offset, 0);
    /// assert_eq!(layout.tensors.last().unwrap().name, "transformer.ln_f.weight");
    /// ```
    pub fn new(cfg: &ModelConfig) -> Self {
        let (v, t, c) = (cfg.vocab_size, cfg.block_size, cfg.n_embd);
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            ("transformer.wte.weight".into(), vec![v, c]),
            ("transformer.wpe.weight".into(), vec![t, c]),
        ];
        for i in 0..cfg.n_layer {
            let p = format!("transformer.h.{i}");
            shapes.push((format!("{p}.ln_1.weight"), vec![c]));
            shapes.push((format!("{p}.attn.c_attn.weight"), vec![3 * c, c]));
            shapes.push((format!("{p}.attn.c_proj.weight"), vec![c, c]));
            shapes.push((format!("{p}.ln_2.weight"), vec![c]));
            shapes.push((format!("{p}.mlp.c_fc.weight"), vec![4 * c, c]));
            shapes.push((format!("{p}.mlp.c_proj.weight"), vec![c, 4 * c]));
        }
        shapes.push(("transformer.ln_f.weight".into(), vec![c]));

        let mut offset = 0;
        let tensors = shapes
            .into_iter()
            .map(|(name, shape)| {
                let len = shape.iter().product();
                let info = TensorInfo {
                    name,
                    decay: shape.len() >= 2,
                    shape,
                    offset,
                    len,
                };
                offset += len;
                info
            })
            .collect();
        ParamLayout {
            tensors,
            len: offset,
        }
    }

    /// The tensor called `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The offsets of block `layer`: from its `ln_1.weight` to the end of its `mlp.c_proj.weight`.
    ///
    /// Found by position, not by name: forward and backward ask for every block at every
    /// step, and a name lookup would allocate its `format!`ed name there.
    ///
    /// # Panics
    /// If `layer` is not a block of this model.
    pub fn block_range(&self, layer: usize) -> Range<usize> {
        // wte and wpe, then PER_BLOCK tensors per block, then ln_f (the module docs' picture)
        let blocks = self.tensors.len().saturating_sub(3) / PER_BLOCK;
        assert!(layer < blocks, "the model has no block {layer}");
        let first = &self.tensors[2 + layer * PER_BLOCK];
        let last = &self.tensors[2 + layer * PER_BLOCK + PER_BLOCK - 1];
        debug_assert!(first.name.ends_with(".ln_1.weight"), "{}", first.name);
        debug_assert!(last.name.ends_with(".mlp.c_proj.weight"), "{}", last.name);
        first.offset..last.offset + last.len
    }
}

/// Tensors per block: ln_1, c_attn, attn.c_proj, ln_2, c_fc, mlp.c_proj.
const PER_BLOCK: usize = 6;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_contiguous_and_blocks_in_order() {
        let cfg = ModelConfig::default();
        let l = ParamLayout::new(&cfg);
        let mut next = 0;
        for t in &l.tensors {
            assert_eq!(t.offset, next, "{}", t.name);
            next += t.len;
        }
        assert_eq!(next, l.len);
        assert_eq!(l.len, cfg.num_params());
        let c = cfg.n_embd;
        assert_eq!(
            l.block_range(0).start,
            (cfg.vocab_size + cfg.block_size) * c
        );
        for i in 0..cfg.n_layer {
            assert_eq!(l.block_range(i).len(), 2 * c + 12 * c * c);
            if i > 0 {
                assert_eq!(l.block_range(i).start, l.block_range(i - 1).end);
            }
        }
        assert_eq!(l.get("transformer.ln_f.weight").unwrap().offset, l.len - c);
        assert!(l.get("transformer.wpe.weight").unwrap().decay);
        assert!(!l.get("transformer.h.2.ln_2.weight").unwrap().decay);
    }

    #[test]
    #[should_panic(expected = "no block 4")]
    fn a_block_past_the_last_is_a_panic() {
        ParamLayout::new(&ModelConfig::default()).block_range(4);
    }
}
