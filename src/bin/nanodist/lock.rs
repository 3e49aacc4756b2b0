//! Owning a run directory: one process at a time.
//!
//! ```text
//!   run A: open DIR/nanodist.lock, try_lock -> ok, write "4242"   ... trains ... exits: unlocked
//!   run B: open DIR/nanodist.lock, try_lock -> WouldBlock, read "4242"
//!          "the run directory DIR is in use by nanodist (pid 4242): ..."
//! ```
//!
//! The lock is the operating system's (`flock` on Unix), not the file's existence: it goes
//! with the process however the process ends, so a killed run never leaves a stale lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use nanodist::Error;

/// The lock file's name inside a run directory.
pub const LOCK: &str = "nanodist.lock";
/// An exclusive hold on a run directory: released when dropped (or when the process ends).
///
/// Rust note: `File::lock` is an advisory whole-file lock (`flock` on Unix); the lock lives
/// as long as the `File`, so owning this value IS owning the directory.
pub struct Lock {
    _file: File,
}

/// Takes the run directory `dir` (which exists) for this process, or says who holds it.
pub fn lock(dir: &Path) -> Result<Lock, Error> {
    let path = dir.join(LOCK);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| {
            Error::Config(format!(
                "cannot create the lock file {} ({e}): pass a run directory you can write to",
                path.display()
            ))
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(Error::Config(format!(
                "the run directory {} is in use by nanodist (pid {}): wait for that run to end or stop it, or pass another directory",
                dir.display(),
                holder(&path)
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(Error::Config(format!(
                "cannot lock {} ({e}): use a run directory on a local disk",
                path.display()
            )))
        }
    }
    // Locked: now the pid is ours to write.
    let pid = std::process::id().to_string();
    let written = (file.set_len(0))
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(pid.as_bytes()))
        .and_then(|()| file.flush());
    written.map_err(|e| Error::io(&path, e))?;
    Ok(Lock { _file: file })
}

/// The pid written in a lock file by its holder (which writes it just after locking, so
/// a moment's wait covers a holder that started a moment ago).
fn holder(path: &Path) -> String {
    for _ in 0..50 {
        let mut text = String::new();
        if let Ok(mut f) = File::open(path) {
            let _ = f.read_to_string(&mut text);
        }
        if !text.trim().is_empty() {
            return text.trim().to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    "unknown".into()
}
