//! Helpers shared by the tests that drive the `rampart` binary.
// Each test binary uses its own subset.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `mib` MiB of distinct, non-repeating 1 MiB blocks (a counter mixed into every
/// 8 bytes); with `marker`, every block opens with it.
pub fn write_blocks(p: &Path, mib: u64, marker: Option<&[u8]>) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(p).unwrap());
    let mut block = vec![0u8; 1 << 20];
    for i in 0..mib {
        for (j, chunk) in block.chunks_mut(8).enumerate() {
            let v = (i << 20 | j as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        if let Some(m) = marker {
            block[..m.len()].copy_from_slice(m);
        }
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
}

/// Every file below `dir`, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else {
                out.push(p)
            }
        }
    }
    out.sort();
    out
}
