//! The crate's error type, written for this harness from what `wal.rs` uses:
//! `WalError::Io(std::io::Error)`, `WalError::Corrupt { reason }`, and
//! `From<std::io::Error>` for its `?`. `EntryTooLarge` is what `frame::encode`
//! returns for an entry over 16 MiB.

use std::fmt;

#[derive(Debug)]
pub enum WalError {
    Io(std::io::Error),
    Corrupt { reason: String },
    EntryTooLarge { size: usize, max: usize },
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Io(e) => write!(f, "I/O error: {e}"),
            WalError::Corrupt { reason } => write!(f, "corrupt: {reason}"),
            WalError::EntryTooLarge { size, max } => {
                write!(f, "entry of {size} bytes exceeds the maximum of {max}")
            }
        }
    }
}

impl std::error::Error for WalError {}

impl From<std::io::Error> for WalError {
    fn from(e: std::io::Error) -> Self {
        WalError::Io(e)
    }
}
