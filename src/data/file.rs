//! Reading a corpus from a text file, with an error for each way a file can be unusable.
//!
//! ```text
//!   path --metadata--> regular file? size <= MAX_FILE_BYTES?     (nothing opened yet)
//!        --open, read at most MAX_FILE_BYTES + 1 bytes-->  bytes
//!        --text_from_bytes--> not empty, no NUL, UTF-8 (or which kind of not)
//! ```
//!
//! The checks come before the read so that no input can make the loader run without end:
//! a device (`/dev/zero`) is never read, a FIFO with no writer is never opened (opening it
//! for reading would wait for a writer), and a file that grows after its size was checked
//! is still read only up to the limit.

use std::io::Read;
use std::path::Path;

use crate::Error;

/// The largest data file nanodist reads: 256 MiB.
///
/// The corpus is held as one 4-byte token per char, so a file this size takes up to 1 GiB
/// as tokens, beside its text while it is tokenised: as much as a laptop gives a tool
/// without complaint, and 250 times the built-in corpus.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// The contents of the UTF-8 text file at `path`.
///
/// Each failure is one line that names the problem and what to do: the file is missing,
/// is a directory or another thing that is not a regular file (a device, a FIFO, a
/// socket), is larger than [`MAX_FILE_BYTES`], or fails [`text_from_bytes`].
pub(crate) fn read_text(path: &str) -> Result<String, Error> {
    if path.is_empty() {
        return Err(Error::Data(
            "--data is empty: pass the path of a UTF-8 text file, or --data tales for the \
             built-in corpus"
                .into(),
        ));
    }
    let p = Path::new(path);
    let meta = std::fs::metadata(p).map_err(|e| not_readable(path, e))?;
    check_regular(path, &meta)?;
    let file = std::fs::File::open(p).map_err(|e| not_readable(path, e))?;
    // The path could have been replaced between the two looks: check what was opened.
    check_regular(path, &file.metadata().map_err(|e| Error::io(p, e))?)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(p, e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(path));
    }
    text_from_bytes(path, bytes)
}

/// The text of a data file's `bytes`, or the one-line reason they are not usable text:
/// empty, binary (a NUL byte), a UTF-8 file cut in the middle of its last char, or not
/// UTF-8 at all. `name` is the file's path, for the message.
///
/// This is the loader's whole text path after the file is read; the fuzz target
/// (`fuzz/fuzz_targets/data.rs`) feeds it arbitrary bytes.
pub fn text_from_bytes(name: &str, bytes: Vec<u8>) -> Result<String, Error> {
    if bytes.is_empty() {
        return Err(Error::Data(format!(
            "data file {name} is empty: use a UTF-8 text file of at least a few \
             thousand chars, or --data tales"
        )));
    }
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(Error::Data(format!(
            "data file {name} looks binary (it has a NUL byte at offset {at}): nanodist \
             trains on UTF-8 text; pass a .txt file, or --data tales"
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        let utf8 = e.utf8_error();
        let at = utf8.valid_up_to();
        let bytes = e.as_bytes();
        let byte = bytes[at];
        let tail = bytes.len() - at;
        // `error_len() == None`: the bytes from `at` on are the valid start of a char
        // whose remaining bytes are missing, which only happens at the very end.
        if utf8.error_len().is_none() {
            return Error::Data(format!(
                "data file {name} is UTF-8 cut off in the middle of its last char (its last \
                 {tail} byte{} start a char that never ends): copy the whole file again, or \
                 drop the partial char with truncate -s -{tail} {name}",
                if tail == 1 { "" } else { "s" }
            ));
        }
        // Multi-byte chars before the bad byte say the file is UTF-8 with damage in it;
        // only an ASCII prefix leaves another encoding (Latin-1 is the usual one) likely.
        if bytes[..at].is_ascii() {
            Error::Data(format!(
                "data file {name} is not UTF-8 (byte 0x{byte:02x} at offset {at} is not valid \
                 there): if it is Latin-1 text, convert it with iconv -f LATIN1 -t UTF-8 \
                 {name} > {name}.utf8.txt and train on the new file"
            ))
        } else {
            Error::Data(format!(
                "data file {name} is UTF-8 with an invalid byte 0x{byte:02x} at offset {at}: \
                 repair the file, or drop the invalid bytes with iconv -c -f UTF-8 -t UTF-8 \
                 {name} > {name}.clean.txt and train on the new file"
            ))
        }
    })
}

/// Why a data path cannot be read, from the error of looking it up or opening it.
fn not_readable(path: &str, e: std::io::Error) -> Error {
    use std::io::ErrorKind::{NotADirectory, NotFound, PermissionDenied};
    match e.kind() {
        NotFound => Error::Data(format!(
            "data file {path} does not exist: check the path, or use --data tales for \
             the built-in corpus"
        )),
        NotADirectory => Error::Data(format!(
            "data path {path} goes through a file as if it were a directory: check the \
             path, or use --data tales for the built-in corpus"
        )),
        PermissionDenied => Error::Data(format!(
            "data file {path} cannot be read (permission denied): make it readable \
             (chmod u+r), or pass another file"
        )),
        _ => Error::io(path, e),
    }
}

/// Refuses what is not a regular file of at most [`MAX_FILE_BYTES`].
fn check_regular(path: &str, meta: &std::fs::Metadata) -> Result<(), Error> {
    if meta.is_dir() {
        return Err(Error::Data(format!(
            "data path {path} is a directory, not a file: pass one text file, such as \
             {}",
            Path::new(path).join("input.txt").display()
        )));
    }
    if !meta.is_file() {
        return Err(Error::Data(format!(
            "data path {path} is not a regular file (a device, FIFO or socket, which could \
             be endless or wait forever): save the text to a file and pass that file"
        )));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(path));
    }
    Ok(())
}

fn too_large(path: &str) -> Error {
    Error::Data(format!(
        "data file {path} is larger than the {} MiB nanodist reads (each char becomes a \
         4-byte token in memory): train on a part of it, cut at a line break, e.g. \
         head -n 1000000 {path} > part.txt",
        MAX_FILE_BYTES >> 20
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(bytes: &[u8]) -> String {
        text_from_bytes("f.txt", bytes.to_vec())
            .unwrap_err()
            .to_string()
    }

    /// A UTF-8 file cut inside its last char is told apart from a file in another encoding:
    /// iconv from Latin-1 would turn its good chars into mojibake.
    #[test]
    fn a_cut_utf8_file_is_not_sent_to_iconv() {
        let mut cut = "héllo €".as_bytes().to_vec();
        cut.pop();
        let msg = err(&cut);
        assert!(
            msg.contains("cut off") && msg.contains("truncate -s -2 f.txt"),
            "{msg}"
        );
        assert!(!msg.contains("LATIN1"), "{msg}");
        let msg = err(b"caf\xe9 au lait");
        assert!(
            msg.contains("iconv -f LATIN1") && msg.contains("offset 3"),
            "{msg}"
        );
        let msg = err("héllo \u{20ac}"
            .as_bytes()
            .iter()
            .copied()
            .chain([0xff, b'x'])
            .collect::<Vec<_>>()
            .as_slice());
        assert!(
            msg.contains("iconv -c -f UTF-8") && !msg.contains("LATIN1"),
            "{msg}"
        );
        assert_eq!(text_from_bytes("f", "ok €".into()).unwrap(), "ok €");
    }

    /// Nothing that is not a regular file is read: a device is endless, and opening a FIFO
    /// with no writer would wait for one.
    #[test]
    fn only_regular_files_are_read() {
        let msg = read_text("/dev/zero").unwrap_err().to_string();
        assert!(msg.contains("not a regular file"), "{msg}");
        let dir = std::env::temp_dir().join(format!("nanodist-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let msg = read_text(fifo.to_str().unwrap()).unwrap_err().to_string();
            assert!(msg.contains("not a regular file"), "{msg}");
        }
        let file = dir.join("a.txt");
        std::fs::write(&file, "text").unwrap();
        let below = format!("{}/b.txt", file.display());
        let msg = read_text(&below).unwrap_err().to_string();
        assert!(msg.contains("goes through a file"), "{msg}");
        let msg = read_text(dir.to_str().unwrap()).unwrap_err().to_string();
        assert!(msg.contains("is a directory"), "{msg}");
        let msg = read_text("").unwrap_err().to_string();
        assert!(msg.contains("--data is empty"), "{msg}");
        // a sparse file: its size is refused from the metadata, nothing is read
        let big = dir.join("big.txt");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        let msg = read_text(big.to_str().unwrap()).unwrap_err().to_string();
        assert!(msg.contains("larger than the 256 MiB"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
