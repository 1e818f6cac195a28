//! Random and mutated bytes against every parser of untrusted input, so CI exercises the
//! fuzz harnesses (`fuzz/fuzz_targets/log_*.rs`) without nightly. Seeded: failures reproduce.

use rampart_log::{Config, Log, fuzzing};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Valid inputs to mutate: a segment body, an entry bundle, a checkpoint, tile paths.
fn corpus() -> Vec<Vec<u8>> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    Log::init(
        &dir,
        "fuzz.corpus",
        &tmp.path().join("s"),
        &mut rand_core::OsRng,
    )
    .unwrap();
    let (mut log, _) = Log::open(&dir, Config::default()).unwrap();
    for i in 0..300u32 {
        log.append(format!("entry {i} {}", "z".repeat((i % 40) as usize)).as_bytes())
            .unwrap();
    }
    let cp = log.checkpoint().unwrap();
    drop(log);
    let seg_dir = dir.join("segments");
    let seg = std::fs::read_dir(&seg_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let seg = std::fs::read(seg).unwrap()[8..].to_vec();
    let bundle = std::fs::read(dir.join("tile/entries/000")).unwrap();
    vec![
        seg,
        bundle,
        cp,
        b"tile/0/x001/234".to_vec(),
        b"tile/entries/005.p/17".to_vec(),
        b"rampart-audit/v1\tk\tput\tb/o\t3\tsuccess".to_vec(),
    ]
}

fn mutate(rng: &mut ChaCha8Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.gen_range(1..8) {
        match rng.gen_range(0..5) {
            0 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v[i] = rng.r#gen();
            }
            2 => {
                let cut = rng.gen_range(0..=v.len());
                v.truncate(cut);
            }
            3 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                let j = rng.gen_range(i..v.len().min(i + 64) + 1).min(v.len());
                let chunk = v[i..j].to_vec();
                let at = rng.gen_range(0..=v.len());
                v.splice(at..at, chunk);
            }
            _ => {
                // Boundary values in length-like positions.
                let at = rng.gen_range(0..=v.len().saturating_sub(4));
                let val: u32 = [0, 1, 80, 81, 0xffff, 0x10000, u32::MAX][rng.gen_range(0..7)];
                if v.len() >= at + 4 {
                    v[at..at + 4].copy_from_slice(&val.to_le_bytes());
                }
            }
        }
    }
    v
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_1095);
    let corpus = corpus();
    for round in 0..3000 {
        let input = if round % 3 == 0 {
            let mut v = vec![0u8; rng.gen_range(0..300)];
            rng.fill_bytes(&mut v);
            v
        } else {
            mutate(&mut rng, &corpus[round % corpus.len()])
        };
        fuzzing::parse_all(&input);
        if round % 2 == 0 {
            fuzzing::segment(&input);
        }
    }
    // The unmutated segment body parses completely (the harness asserts it ends exactly at
    // the end of the input, frames contiguous).
    fuzzing::segment(&corpus[0]);
}
