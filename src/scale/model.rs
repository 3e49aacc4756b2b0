//! The model's shape, its parameter count and its FLOPs per step: the arithmetic every other
//! part of the cost model starts from.
//!
//! ```text
//!   tokens (B, s) -> embedding (V x h) + positions (s x h)
//!                 -> l blocks, each: attention 4h^2 weights, MLP 8h^2 weights  => 12 h^2
//!                 -> final LayerNorm -> logits (tied to the embedding: h x V)
//! ```

use serde::Serialize;

/// A GPT's shape, in the letters Megatron-LM's papers use (l, a, h, s, V).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelShape {
    /// Shown in reports.
    pub name: String,
    /// Transformer blocks (l; nanodist's L).
    pub layers: usize,
    /// Attention heads (a; nanodist's H).
    pub heads: usize,
    /// Hidden size (h; nanodist's C).
    pub hidden: usize,
    /// Sequence length (s; nanodist's T).
    pub seq: usize,
    /// Vocabulary (V).
    pub vocab: usize,
}

impl ModelShape {
    /// nanodist's default baby GPT: L=4, H=4, C=128, T=64, V=65 (Tiny Shakespeare's chars).
    pub fn tiny() -> ModelShape {
        ModelShape::custom("tiny GPT", 4, 4, 128, 64, 65)
    }

    /// GPT-2 small, "124M" (Radford et al. 2019): 12 layers, 12 heads, 768 wide, 1024 context.
    pub fn gpt2() -> ModelShape {
        ModelShape::custom("GPT-2 124M", 12, 12, 768, 1024, 50257)
    }

    /// GPT-2 XL, "1.5B": 48 layers, 25 heads, 1600 wide.
    pub fn gpt2_xl() -> ModelShape {
        ModelShape::custom("GPT-2 XL 1.5B", 48, 25, 1600, 1024, 50257)
    }

    /// GPT-3 175B (Brown et al. 2020): 96 layers, 96 heads, 12288 wide, 2048 context. The
    /// vocabulary is 51,200, GPT-2's 50,257 padded as Megatron-LM pads it (Narayanan et al.
    /// 2021 use 51,200 for all their models): the count is then 174.6B, their Table 2's figure.
    pub fn gpt3() -> ModelShape {
        ModelShape::custom("GPT-3 175B", 96, 96, 12288, 2048, 51200)
    }

    /// Any shape.
    pub fn custom(
        name: &str,
        layers: usize,
        heads: usize,
        hidden: usize,
        seq: usize,
        vocab: usize,
    ) -> ModelShape {
        ModelShape {
            name: name.into(),
            layers,
            heads,
            hidden,
            seq,
            vocab,
        }
    }

    /// A preset by its command-line name: `tiny`, `gpt2`, `gpt2-xl`, `gpt3`.
    pub fn preset(name: &str) -> Option<ModelShape> {
        match name.to_ascii_lowercase().as_str() {
            "tiny" => Some(ModelShape::tiny()),
            "gpt2" | "gpt2-124m" => Some(ModelShape::gpt2()),
            "gpt2-xl" | "gpt2xl" => Some(ModelShape::gpt2_xl()),
            "gpt3" | "gpt3-175b" => Some(ModelShape::gpt3()),
            _ => None,
        }
    }

    /// Parameters of one transformer block, GPT-2 style with biases:
    /// QKV 3h^2 + 3h, attention projection h^2 + h, MLP 8h^2 + 5h, two LayerNorms 4h
    /// => `12 h^2 + 13 h`.
    pub fn block_params(&self) -> f64 {
        let h = self.hidden as f64;
        12.0 * h * h + 13.0 * h
    }

    /// Parameters of the embeddings: tokens `V h` (tied with the output head) and positions `s h`.
    pub fn embedding_params(&self) -> f64 {
        ((self.vocab + self.seq) * self.hidden) as f64
    }

    /// All parameters: `l (12 h^2 + 13 h) + (V + s) h + 2 h` (the last term: the final
    /// LayerNorm). GPT-2 124M gives 124.4M; GPT-3 with V = 51,200 gives 174.6B.
    /// (nanodist's own model has no biases: 11 h fewer per block.)
    pub fn params(&self) -> f64 {
        self.layers as f64 * self.block_params()
            + self.embedding_params()
            + 2.0 * self.hidden as f64
    }

    /// FLOPs of one training step of `batch` sequences counting only the matrix products
    /// (Narayanan et al. 2021, eq. 3 and its appendix). A multiply-add is 2 FLOPs; forward 1x,
    /// backward 2x (gradients for inputs and for weights), and with full recomputation a
    /// second forward of the blocks (not of the logits):
    ///
    /// - with recomputation: `96 B s l h^2 (1 + s/(6h) + V/(16 l h))`
    /// - without:            `72 B s l h^2 (1 + s/(6h) + V/(12 l h))`
    ///
    /// Both hold the logit layer's `6 B s h V` once. Units: FLOP per step.
    pub fn step_flops(&self, batch: usize, recompute: bool) -> f64 {
        let (b, s, l, h, v) = (
            batch as f64,
            self.seq as f64,
            self.layers as f64,
            self.hidden as f64,
            self.vocab as f64,
        );
        if recompute {
            96.0 * b * s * l * h * h * (1.0 + s / (6.0 * h) + v / (16.0 * l * h))
        } else {
            72.0 * b * s * l * h * h * (1.0 + s / (6.0 * h) + v / (12.0 * l * h))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts() {
        // 12*(12*768^2 + 13*768) + (50257 + 1024)*768 + 2*768 = 124,439,808
        assert_eq!(ModelShape::gpt2().params(), 124_439_808.0);
        let p = ModelShape::gpt3().params();
        assert!((p / 1e9 - 174.6).abs() < 0.05, "GPT-3: {p}");
        let xl = ModelShape::gpt2_xl().params();
        assert!((xl / 1e9 - 1.56).abs() < 0.02, "GPT-2 XL: {xl}");
    }

    #[test]
    fn recompute_adds_one_forward_of_the_blocks() {
        // the difference is 2 FLOPs x (blocks' 24 s l h^2 + attention 4 s^2 l h) per sequence:
        // 96-72 = 24 B s l h^2 (1 + s/(6h)), the logits cancel out.
        let m = ModelShape::gpt2();
        let (b, s, l, h) = (8.0, 1024.0, 12.0, 768.0);
        let diff = m.step_flops(8, true) - m.step_flops(8, false);
        let want = 24.0 * b * s * l * h * h * (1.0 + s / (6.0 * h));
        assert!((diff / want - 1.0).abs() < 1e-12, "{diff} vs {want}");
    }
}
