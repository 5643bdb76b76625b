//! Frame codec, written for this harness from the walogs format (docs/format.md)
//! and the note at the top of the crate's `wal.rs`:
//! [len u32 LE][crc u32 LE][lsn u64 LE][data], crc = CRC-32 (IEEE, crc32fast)
//! over len ++ lsn ++ data, at most 16 MiB of data, a 16-byte header.
//!
//! `decode` reads one frame. A frame whose `len` exceeds the maximum, whose
//! bytes run past the end of the file, or whose CRC does not match is not a
//! frame: `Corrupt`. Nothing at all left to read is `EndOfLog`. Its error is
//! `std::io::Error` (what `wal.rs` wraps in `WalError::Io` when iterating).

use std::io::{self, Read};

use crate::error::WalError;

pub const FRAME_HEADER_SIZE: usize = 16;
pub const MAX_ENTRY_SIZE: usize = 16 * 1024 * 1024;

#[derive(Debug)]
pub enum DecodeOutcome {
    Entry {
        lsn: u64,
        data: Vec<u8>,
        bytes_consumed: u64,
    },
    EndOfLog,
    Corrupt,
}

fn checksum(len: &[u8], lsn: &[u8], data: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len);
    hasher.update(lsn);
    hasher.update(data);
    hasher.finalize()
}

/// The frame of entry `lsn` holding `data`.
pub fn encode(lsn: u64, data: &[u8]) -> Result<Vec<u8>, WalError> {
    if data.len() > MAX_ENTRY_SIZE {
        return Err(WalError::EntryTooLarge {
            size: data.len(),
            max: MAX_ENTRY_SIZE,
        });
    }
    let len = (data.len() as u32).to_le_bytes();
    let lsn = lsn.to_le_bytes();
    let mut out = Vec::with_capacity(FRAME_HEADER_SIZE + data.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&checksum(&len, &lsn, data).to_le_bytes());
    out.extend_from_slice(&lsn);
    out.extend_from_slice(data);
    Ok(out)
}

/// Reads until `buf` is full or the reader is at its end; returns the bytes read.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Decodes the next frame from `reader`.
pub fn decode<R: Read>(reader: &mut R) -> io::Result<DecodeOutcome> {
    let mut header = [0u8; FRAME_HEADER_SIZE];
    match read_full(reader, &mut header)? {
        0 => return Ok(DecodeOutcome::EndOfLog),
        FRAME_HEADER_SIZE => {}
        _ => return Ok(DecodeOutcome::Corrupt),
    }
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
    let lsn = u64::from_le_bytes(header[8..16].try_into().unwrap());
    if len > MAX_ENTRY_SIZE {
        return Ok(DecodeOutcome::Corrupt);
    }
    let mut data = vec![0u8; len];
    if read_full(reader, &mut data)? < len {
        return Ok(DecodeOutcome::Corrupt);
    }
    if checksum(&header[0..4], &header[8..16], &data) != crc {
        return Ok(DecodeOutcome::Corrupt);
    }
    Ok(DecodeOutcome::Entry {
        lsn,
        data,
        bytes_consumed: (FRAME_HEADER_SIZE + len) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_test_vector() {
        // docs/format.md: len=5, lsn=1, data=b"hello".
        let frame = encode(1, b"hello").unwrap();
        let want: [u8; 21] = [
            0x05, 0, 0, 0, 0x2f, 0x95, 0xe5, 0x10, 1, 0, 0, 0, 0, 0, 0, 0, b'h', b'e', b'l', b'l',
            b'o',
        ];
        assert_eq!(frame, want);
        match decode(&mut &frame[..]).unwrap() {
            DecodeOutcome::Entry { lsn, data, bytes_consumed } => {
                assert_eq!((lsn, &data[..], bytes_consumed), (1, &b"hello"[..], 21));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode(&mut &frame[..20]).unwrap(), DecodeOutcome::Corrupt));
        assert!(matches!(decode(&mut &frame[..0]).unwrap(), DecodeOutcome::EndOfLog));
    }
}
