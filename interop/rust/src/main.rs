//! walogs-interop: the Rust crate walogs 0.1.0's writer (`wal.rs`, its own
//! code) behind a small command line, so the Python tests can drive it as a
//! separate process. Every command opens the directory with `Wal::open` (the
//! crate's recovery: it truncates a bad tail and creates what is missing) and
//! first prints the state that open found:
//!
//!     tail=clean next_lsn=N segments=K
//!     tail=truncated_at:OFFSET next_lsn=N segments=K
//!
//! Commands:
//!     open DIR                 only the line above
//!     append DIR N [SIZE]      N entries, then each assigned LSN on a line;
//!                              entry LSN l holds `rust-<l>`, repeated and cut
//!                              to SIZE bytes when SIZE is given
//!     dump DIR                 every entry `Wal::iter` yields: `LSN HEX` a line
//!     rotate DIR               `Wal::rotate`
//!     checkpoint DIR LSN       `Wal::checkpoint(LSN)`, then `deleted=N`
//!
//! Exit status: 0 done, 1 `WalError::Corrupt` (message on stderr), 2 usage,
//! 3 any other error.

mod error;
mod frame;
mod segment;
mod wal;

use std::path::Path;
use std::process::ExitCode;

use error::WalError;
use wal::{Lsn, TailState, Wal};

const USAGE: &str = "usage: walogs-interop open DIR | append DIR N [SIZE] | dump DIR | rotate DIR | checkpoint DIR LSN";

/// The data of the entry at `lsn`: `rust-<lsn>`, or that repeated and cut to `size` bytes.
fn payload(lsn: u64, size: Option<usize>) -> Vec<u8> {
    let base = format!("rust-{lsn}").into_bytes();
    match size {
        None => base,
        Some(size) => base.iter().copied().cycle().take(size).collect(),
    }
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn number<T: std::str::FromStr>(arg: Option<&String>) -> Result<T, String> {
    let text = arg.ok_or_else(|| USAGE.to_string())?;
    text.parse().map_err(|_| format!("not a number: {text}\n{USAGE}"))
}

fn run(args: &[String]) -> Result<(), Result<WalError, String>> {
    let (command, dir) = match args {
        [command, dir, ..] => (command.as_str(), Path::new(dir)),
        _ => return Err(Err(USAGE.to_string())),
    };
    let mut wal = Wal::open(dir).map_err(Ok)?;
    let tail = match wal.tail_state() {
        TailState::Clean => "clean".to_string(),
        TailState::TruncatedAt(offset) => format!("truncated_at:{offset}"),
    };
    println!("tail={tail} next_lsn={} segments={}", wal.next_lsn().0, wal.segment_count());
    match command {
        "open" if args.len() == 2 => {}
        "append" if args.len() <= 4 => {
            let count: u64 = number(args.get(2)).map_err(Err)?;
            let size = match args.get(3) {
                Some(_) => Some(number(args.get(3)).map_err(Err)?),
                None => None,
            };
            for _ in 0..count {
                let data = payload(wal.next_lsn().0, size);
                let lsn = wal.append(&data).map_err(Ok)?;
                println!("{}", lsn.0);
            }
        }
        "dump" if args.len() == 2 => {
            for item in wal.iter() {
                let (lsn, data) = item.map_err(Ok)?;
                println!("{} {}", lsn.0, hex(&data));
            }
        }
        "rotate" if args.len() == 2 => wal.rotate().map_err(Ok)?,
        "checkpoint" if args.len() == 3 => {
            let upto: u64 = number(args.get(2)).map_err(Err)?;
            let deleted = wal.checkpoint(Lsn(upto)).map_err(Ok)?;
            println!("deleted={deleted}");
        }
        _ => return Err(Err(USAGE.to_string())),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Ok(WalError::Corrupt { reason })) => {
            eprintln!("corrupt: {reason}");
            ExitCode::from(1)
        }
        Err(Ok(other)) => {
            eprintln!("error: {other}");
            ExitCode::from(3)
        }
        Err(Err(usage)) => {
            eprintln!("{usage}");
            ExitCode::from(2)
        }
    }
}
