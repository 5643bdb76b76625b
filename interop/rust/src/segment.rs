//! Segment file names, written for this harness from the walogs format
//! (docs/format.md, "Directory"): `wal-` + decimal digits + `.log`, zero-padded
//! to 6 digits, more digits above 999999; every other name is ignored; two
//! names for one number are an error. `wal.log` is the legacy v1 file.

use std::path::{Path, PathBuf};

use crate::error::WalError;

pub const V1_FILENAME: &str = "wal.log";

/// The path of segment `seq` in `dir`.
pub fn segment_path(dir: &Path, seq: u32) -> PathBuf {
    dir.join(format!("wal-{seq:06}.log"))
}

/// The segment number a file name stands for, if it is a segment name.
pub fn parse_segment_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment numbers present in `dir`, ascending.
pub fn scan_segments(dir: &Path) -> Result<Vec<u32>, WalError> {
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_name) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    if let Some(pair) = seqs.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(WalError::Corrupt {
            reason: format!("two file names for segment {} in {}", pair[0], dir.display()),
        });
    }
    Ok(seqs)
}
