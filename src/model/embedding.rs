//! Token + position embedding: the first layer, and the last one backward visits.
//!
//! ```text
//!   inputs (B,T) token ids          out[b,t,:] = wte[inputs[b,t], :] + wpe[t, :]
//!   wte (V,C)  one row per token    (wte is also the output head: see `gpt.rs`)
//!   wpe (T,C)  one row per position
//! ```

/// `out (B*T,C) = wte[inputs] + wpe[position]`, for `inputs (B,T)` row-major with `t` positions.
///
/// # Panics
/// On a token id outside the vocabulary, or buffers of the wrong sizes.
pub fn encoder_forward(
    out: &mut [f32],
    inputs: &[u32],
    wte: &[f32],
    wpe: &[f32],
    t: usize,
    c: usize,
) {
    assert_eq!(out.len(), inputs.len() * c);
    assert_eq!(inputs.len() % t, 0);
    let v = wte.len() / c;
    assert!(
        inputs.iter().all(|&i| (i as usize) < v),
        "token id outside the vocabulary of {v}"
    );
    assert!(wpe.len() >= t * c, "wpe has fewer than {t} positions");
    for (i, (row, &tok)) in out.chunks_exact_mut(c).zip(inputs).enumerate() {
        let tok = tok as usize;
        let pos = i % t;
        let te = &wte[tok * c..(tok + 1) * c];
        let pe = &wpe[pos * c..(pos + 1) * c];
        for ((o, &a), &b) in row.iter_mut().zip(te).zip(pe) {
            *o = a + b;
        }
    }
}

/// Accumulates `dwte (V,C)` and `dwpe (T,C)` from `dout (B*T,C)`.
pub fn encoder_backward(
    dwte: &mut [f32],
    dwpe: &mut [f32],
    dout: &[f32],
    inputs: &[u32],
    t: usize,
    c: usize,
) {
    assert_eq!(dout.len(), inputs.len() * c);
    assert_eq!(inputs.len() % t, 0);
    assert!(dwpe.len() >= t * c, "dwpe has fewer than {t} positions");
    for (i, (drow, &tok)) in dout.chunks_exact(c).zip(inputs).enumerate() {
        let tok = tok as usize;
        let pos = i % t;
        // forward: out = wte[tok] + wpe[pos]  =>  both rows receive dout unchanged
        for (g, &d) in dwte[tok * c..(tok + 1) * c].iter_mut().zip(drow) {
            *g += d;
        }
        for (g, &d) in dwpe[pos * c..(pos + 1) * c].iter_mut().zip(drow) {
            *g += d;
        }
    }
}
