//! Reading a corpus from a text file, with an error for each way a file can be unusable.

use std::path::Path;

use crate::Error;

/// The contents of the UTF-8 text file at `path`.
///
/// Each failure is one line that names the problem and what to do: the file is missing,
/// is a directory, is empty, is binary (holds a NUL byte), or is not UTF-8.
pub(crate) fn read_text(path: &str) -> Result<String, Error> {
    let p = Path::new(path);
    let meta = match std::fs::metadata(p) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Data(format!(
                "data file {path} does not exist: check the path, or use --data tales for \
                 the built-in corpus"
            )))
        }
        Err(e) => return Err(Error::io(p, e)),
    };
    if meta.is_dir() {
        return Err(Error::Data(format!(
            "data path {path} is a directory, not a file: pass one text file, such as \
             {}",
            p.join("input.txt").display()
        )));
    }
    let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
    if bytes.is_empty() {
        return Err(Error::Data(format!(
            "data file {path} is empty: use a UTF-8 text file of at least a few \
             thousand chars, or --data tales"
        )));
    }
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(Error::Data(format!(
            "data file {path} looks binary (it has a NUL byte at offset {at}): nanodist \
             trains on UTF-8 text; pass a .txt file, or --data tales"
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let byte = e.as_bytes()[at];
        Error::Data(format!(
            "data file {path} is not UTF-8 (byte 0x{byte:02x} at offset {at} is not valid \
             there): convert it first, e.g. iconv -f LATIN1 -t UTF-8 {path} > \
             {path}.utf8.txt, and train on the new file"
        ))
    })
}
