//! Fuzzes every decoder of untrusted log bytes: sealed entries, segment frames, C2SP entry
//! bundles, tile paths, tile hashes, audit records and signed checkpoints.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rampart_log::fuzzing::parse_all(data);
});
