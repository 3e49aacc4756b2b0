//! Checkpoints: everything needed to continue a run, in one safetensors file, saved atomically.
//!
//! `checkpoint.safetensors` holds the weights under nanoGPT's `state_dict` names (so
//! `safetensors.torch.load_file` reads them as-is), the AdamW moments as
//! `optimizer.m.<name>` / `optimizer.v.<name>`, and string metadata: the step, the
//! configuration, the vocabulary, the sampler's state, the data file's fingerprint (see
//! [`DataFingerprint`]) and a checksum.
//!
//! ```text
//!  save:  bytes -> checkpoint.safetensors.tmp -> fsync -> rename -> fsync(dir)
//!                                                 ^ atomic: a reader (or a crash) sees the
//!                                                   old file or the new one, never half
//! ```
//!
//! The checksum (64-bit FNV-1a over the metadata and every tensor's bytes) catches what
//! the format itself does not: a flipped byte inside the tensor data.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::config::TrainConfig;
use crate::error::Error;
use crate::model::ParamLayout;

/// The file name inside a run directory.
pub const FILE: &str = "checkpoint.safetensors";

/// The state of a run after `step` optimizer steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The run's configuration (the model's shape included).
    pub config: TrainConfig,
    /// The vocabulary, as the string of its chars in order.
    pub vocab: String,
    /// Optimizer steps completed; a resumed run continues with this step.
    pub step: usize,
    /// Parameters, flat, in layout order.
    pub params: Vec<f32>,
    /// AdamW first moments, same layout.
    pub adam_m: Vec<f32>,
    /// AdamW second moments, same layout.
    pub adam_v: Vec<f32>,
    /// AdamW's step counter (for bias correction).
    pub adam_t: u64,
    /// The data file the run trains on (`None` for the built-in corpus, which its seed
    /// makes again, and for checkpoints written before fingerprints were recorded).
    pub data: Option<DataFingerprint>,
}

/// A data file as a run records it: where it was, and enough of its content to tell
/// whether a file found later is the same one.
///
/// ```text
///   {"path": "/home/me/corpus.txt", "bytes": 1115394, "fnv1a64": "a5f0...16 hex digits"}
/// ```
/// A resumed run looks for the file at `path` (absolute, so the working directory does not
/// matter), or at a new path the user names, and refuses it unless size and hash match.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataFingerprint {
    /// The file's absolute path when the run recorded it.
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// 64-bit FNV-1a of its bytes, 16 hex digits.
    pub fnv1a64: String,
}

impl DataFingerprint {
    /// The fingerprint of the file at `path` (made absolute), read now.
    pub fn of_file(path: &Path) -> Result<DataFingerprint, Error> {
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        let abs = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(DataFingerprint {
            path: abs.display().to_string(),
            bytes: bytes.len() as u64,
            fnv1a64: format!("{:016x}", fnv1a64(FNV_OFFSET, &bytes)),
        })
    }

    /// What differs between `self` (the file found now) and `then` (the one recorded),
    /// in words; `None` when they are the same content.
    pub fn differs_from(&self, then: &DataFingerprint) -> Option<String> {
        if self.bytes != then.bytes {
            Some(format!(
                "its size is {} bytes, the run's data had {}",
                self.bytes, then.bytes
            ))
        } else if self.fnv1a64 != then.fnv1a64 {
            Some(format!(
                "it has the same size ({} bytes) but other contents (FNV-1a {}, the run's data {})",
                self.bytes, self.fnv1a64, then.fnv1a64
            ))
        } else {
            None
        }
    }
}

/// 64-bit FNV-1a over `bytes`, continuing from `hash` (start with [`FNV_OFFSET`]).
pub fn fnv1a64(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

/// FNV-1a's offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// `param_hash`: FNV-1a of the parameters' little-endian bytes, as 16 hex digits.
///
/// Two runs with equal hashes ended with bit-identical models.
///
/// ```
/// assert_eq!(nanodist::checkpoint::param_hash(&[]), "cbf29ce484222325");
/// assert_ne!(nanodist::checkpoint::param_hash(&[0.0]), nanodist::checkpoint::param_hash(&[-0.0]));
/// ```
pub fn param_hash(params: &[f32]) -> String {
    format!("{:016x}", param_fnv(params))
}

/// The number behind [`param_hash`]: 64-bit FNV-1a of the parameters' little-endian bytes.
pub fn param_fnv(params: &[f32]) -> u64 {
    params
        .iter()
        .fold(FNV_OFFSET, |h, p| fnv1a64(h, &p.to_le_bytes()))
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn checksum(meta: &HashMap<String, String>, tensors: &[(String, Vec<usize>, Vec<u8>)]) -> String {
    let mut h = FNV_OFFSET;
    for key in ["step", "config", "vocab", "rng", "adam_t"] {
        h = fnv1a64(h, key.as_bytes());
        h = fnv1a64(h, meta.get(key).map_or(&[][..], |v| v.as_bytes()));
    }
    // The data fingerprint is hashed only where present, so a checkpoint without one
    // keeps the checksum it was written with.
    if let Some(data) = meta.get("data") {
        h = fnv1a64(h, b"data");
        h = fnv1a64(h, data.as_bytes());
    }
    for (name, _, bytes) in tensors {
        h = fnv1a64(h, name.as_bytes());
        h = fnv1a64(h, bytes);
    }
    format!("{h:016x}")
}

/// The three groups of tensors, named as in the file.
fn named_tensors(ck: &Checkpoint, layout: &ParamLayout) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let mut out = Vec::with_capacity(3 * layout.tensors.len());
    for (prefix, values) in [
        ("", &ck.params),
        ("optimizer.m.", &ck.adam_m),
        ("optimizer.v.", &ck.adam_v),
    ] {
        for t in &layout.tensors {
            let slice = &values[t.offset..t.offset + t.len];
            out.push((
                format!("{prefix}{}", t.name),
                t.shape.clone(),
                le_bytes(slice),
            ));
        }
    }
    out
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomic_with(path, bytes, || Ok(()))
}

/// [`write_atomic`] with `before_rename` run between the temp file's fsync and the rename:
/// the tests inject an I/O error there (a full disk, a yanked drive) to check that the old
/// file survives and the temp file is removed.
fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce() -> std::io::Result<()>,
) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        before_rename()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Saves `ck` into `dir/checkpoint.safetensors`, atomically.
pub fn save(dir: &Path, ck: &Checkpoint) -> Result<PathBuf, Error> {
    let layout = ParamLayout::new(&ck.config.model);
    assert_eq!(
        ck.params.len(),
        layout.len,
        "params do not match the layout"
    );
    assert_eq!(ck.adam_m.len(), layout.len);
    assert_eq!(ck.adam_v.len(), layout.len);
    let tensors = named_tensors(ck, &layout);
    let mut meta = HashMap::new();
    meta.insert("step".into(), ck.step.to_string());
    meta.insert(
        "config".into(),
        serde_json::to_string(&ck.config).expect("config serialises"),
    );
    meta.insert("vocab".into(), ck.vocab.clone());
    // The batch sampler is counter-based (see data::sampler): its whole state is the
    // seed and the next step, so that is what "RNG state" means here.
    meta.insert(
        "rng".into(),
        format!(
            r#"{{"sampler":"splitmix64","seed":{},"next_step":{}}}"#,
            ck.config.seed, ck.step
        ),
    );
    meta.insert("adam_t".into(), ck.adam_t.to_string());
    if let Some(data) = &ck.data {
        let json = serde_json::to_string(data).expect("a fingerprint serialises");
        meta.insert("data".into(), json);
    }
    meta.insert("checksum".into(), checksum(&meta, &tensors));
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                .expect("tensor bytes match their shape");
            (name.clone(), view)
        })
        .collect();
    let bytes = safetensors::serialize(views, Some(meta)).expect("checkpoint serialises");
    let path = dir.join(FILE);
    write_atomic(&path, &bytes)?;
    Ok(path)
}

/// Loads and verifies `dir/checkpoint.safetensors`.
pub fn load(dir: &Path) -> Result<Checkpoint, Error> {
    if !dir.is_dir() {
        return Err(Error::Checkpoint(format!(
            "run directory {} does not exist: pass the --out directory of an earlier run",
            dir.display()
        )));
    }
    let path = dir.join(FILE);
    let bytes = fs::read(&path).map_err(|e| {
        Error::Checkpoint(format!(
            "cannot read {} ({e}): the run has no checkpoint yet; train with --checkpoint-every N or let it finish",
            path.display()
        ))
    })?;
    decode(&bytes, &path.display().to_string())
}

/// Decodes and verifies a checkpoint from its bytes; `origin` names it in errors.
///
/// Every malformed input is an `Err`, never a panic or an allocation larger than the
/// input justifies: `fuzz/fuzz_targets/checkpoint.rs` feeds it arbitrary bytes.
pub fn decode(bytes: &[u8], origin: &str) -> Result<Checkpoint, Error> {
    let damaged = |why: String| {
        Error::Checkpoint(format!(
            "checkpoint {origin} is damaged ({why}): resume from another run or start again"
        ))
    };
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| damaged(format!("not a complete safetensors file: {e}")))?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| damaged(format!("not a complete safetensors file: {e}")))?;
    let meta = header
        .metadata()
        .clone()
        .ok_or_else(|| damaged("no metadata".into()))?;
    let field = |key: &str| {
        meta.get(key)
            .cloned()
            .ok_or_else(|| damaged(format!("metadata has no {key:?}")))
    };
    let config: TrainConfig = serde_json::from_str(&field("config")?)
        .map_err(|e| damaged(format!("unreadable config: {e}")))?;
    let step: usize = field("step")?
        .parse()
        .map_err(|_| damaged("unreadable step".into()))?;
    let adam_t: u64 = field("adam_t")?
        .parse()
        .map_err(|_| damaged("unreadable adam_t".into()))?;
    config
        .model
        .validate()
        .map_err(|e| damaged(format!("its model shape is invalid: {e}")))?;
    // Three f32 tensors of num_params each must fit in the file: check before allocating.
    let needed = config.model.num_params().saturating_mul(12);
    if needed > bytes.len() {
        return Err(damaged(format!(
            "its config describes {} parameters, more than the file holds",
            config.model.num_params()
        )));
    }
    let layout = ParamLayout::new(&config.model);
    let mut values = [
        vec![0f32; layout.len],
        vec![0f32; layout.len],
        vec![0f32; layout.len],
    ];
    let mut tensors = Vec::with_capacity(3 * layout.tensors.len());
    for (prefix, out) in ["", "optimizer.m.", "optimizer.v."]
        .iter()
        .zip(values.iter_mut())
    {
        for t in &layout.tensors {
            let name = format!("{prefix}{}", t.name);
            let view = st
                .tensor(&name)
                .map_err(|_| damaged(format!("tensor {name} is missing")))?;
            if view.dtype() != Dtype::F32 || view.shape() != t.shape.as_slice() {
                return Err(damaged(format!(
                    "tensor {name} is {:?} {:?}, expected F32 {:?}",
                    view.dtype(),
                    view.shape(),
                    t.shape
                )));
            }
            let dst = &mut out[t.offset..t.offset + t.len];
            for (d, b) in dst.iter_mut().zip(view.data().chunks_exact(4)) {
                *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            tensors.push((name, t.shape.clone(), view.data().to_vec()));
        }
    }
    if checksum(&meta, &tensors) != field("checksum")? {
        return Err(damaged(
            "its checksum does not match: a byte was changed after it was written".into(),
        ));
    }
    let data = match meta.get("data") {
        Some(json) => Some(
            serde_json::from_str(json)
                .map_err(|e| damaged(format!("unreadable data fingerprint: {e}")))?,
        ),
        None => None,
    };
    let [params, adam_m, adam_v] = values;
    Ok(Checkpoint {
        data,
        vocab: field("vocab")?,
        config,
        step,
        params,
        adam_m,
        adam_v,
        adam_t,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    fn sample() -> Checkpoint {
        let config = TrainConfig {
            model: ModelConfig {
                vocab_size: 5,
                block_size: 4,
                n_layer: 1,
                n_head: 2,
                n_embd: 4,
            },
            ..TrainConfig::default()
        };
        let n = config.model.num_params();
        Checkpoint {
            config,
            vocab: "\n abc".into(),
            step: 7,
            params: (0..n).map(|i| i as f32 * 0.25 - 3.0).collect(),
            adam_m: (0..n).map(|i| i as f32 * 1e-3).collect(),
            adam_v: (0..n).map(|i| i as f32 * 1e-6).collect(),
            adam_t: 7,
            data: Some(DataFingerprint {
                path: "/data/text.txt".into(),
                bytes: 1234,
                fnv1a64: "0123456789abcdef".into(),
            }),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nanodist-ck-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn save_then_load_round_trips_every_bit() {
        let dir = temp_dir("roundtrip");
        let ck = sample();
        save(&dir, &ck).unwrap();
        assert_eq!(load(&dir).unwrap(), ck);
        assert!(
            !dir.join("checkpoint.tmp").exists(),
            "the temp file is renamed away"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_crash_during_a_save_leaves_the_previous_checkpoint() {
        let dir = temp_dir("crash");
        let ck = sample();
        save(&dir, &ck).unwrap();
        // A save that died half-way leaves only a partial temp file behind.
        fs::write(dir.join("checkpoint.tmp"), b"half a checkp").unwrap();
        assert_eq!(load(&dir).unwrap(), ck);
        // ... and the next save replaces the stale temp file.
        let next = Checkpoint { step: 8, ..ck };
        save(&dir, &next).unwrap();
        assert_eq!(load(&dir).unwrap().step, 8);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// An I/O error after the new bytes are written but before the rename (injected
    /// there) fails the save, keeps the previous checkpoint whole, and leaves no temp file.
    #[test]
    fn an_error_between_write_and_rename_keeps_the_previous_checkpoint() {
        let dir = temp_dir("inject");
        let old = sample();
        save(&dir, &old).unwrap();
        let new_dir = temp_dir("inject-new");
        let newer = Checkpoint {
            step: 9,
            ..sample()
        };
        let new_bytes = fs::read(save(&new_dir, &newer).unwrap()).unwrap();
        let path = dir.join(FILE);
        let mut reached = false;
        let r = write_atomic_with(&path, &new_bytes, || {
            reached = true;
            Err(std::io::Error::other("injected: the disk is full"))
        });
        assert!(reached, "the hook runs between the write and the rename");
        let e = r
            .expect_err("the injected error fails the save")
            .to_string();
        assert!(e.contains("injected"), "{e}");
        assert_eq!(
            load(&dir).unwrap(),
            old,
            "the previous checkpoint is intact"
        );
        assert!(
            !dir.join("checkpoint.tmp").exists(),
            "the temp file is removed"
        );
        // the same bytes without the fault do replace it
        write_atomic(&path, &new_bytes).unwrap();
        assert_eq!(load(&dir).unwrap(), newer);
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&new_dir).unwrap();
    }

    /// A data file is the run's when its size and hash match, wherever it now lies; another
    /// size, or the same size with other bytes, is named.
    #[test]
    fn a_fingerprint_tells_the_same_data_from_other_data() {
        let dir = temp_dir("fingerprint");
        let (a, b) = (dir.join("a.txt"), dir.join("b.txt"));
        fs::write(&a, "the same text\n").unwrap();
        fs::write(&b, "the same text\n").unwrap();
        let then = DataFingerprint::of_file(&a).unwrap();
        assert_eq!((then.bytes, then.fnv1a64.len()), (14, 16));
        assert!(then.path.ends_with("a.txt"), "{}", then.path);
        assert_eq!(
            DataFingerprint::of_file(&b).unwrap().differs_from(&then),
            None
        );
        fs::write(&b, "other text of 19 b\n").unwrap();
        let size = DataFingerprint::of_file(&b)
            .unwrap()
            .differs_from(&then)
            .unwrap();
        assert!(
            size.contains("its size is 19 bytes, the run's data had 14"),
            "{size}"
        );
        fs::write(&b, "the s4me text\n").unwrap();
        let bytes = DataFingerprint::of_file(&b)
            .unwrap()
            .differs_from(&then)
            .unwrap();
        assert!(
            bytes.contains("same size (14 bytes) but other contents"),
            "{bytes}"
        );
        assert!(DataFingerprint::of_file(&dir.join("missing")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_flipped_byte_or_truncation_is_an_error_not_a_panic() {
        let dir = temp_dir("flip");
        let ck = sample();
        save(&dir, &ck).unwrap();
        let good = fs::read(dir.join(FILE)).unwrap();
        for i in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[i] ^= 0x04;
            // A flip in the header's padding or in a key's letter case can still decode to
            // the same content; anything else must be refused.
            if let Ok(decoded) = decode(&bad, "test") {
                assert_eq!(decoded, ck, "byte {i} changed the content without an error");
            }
        }
        for len in [0, 7, 8, 100, good.len() / 2, good.len() - 1] {
            assert!(decode(&good[..len], "test").is_err(), "truncated to {len}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
