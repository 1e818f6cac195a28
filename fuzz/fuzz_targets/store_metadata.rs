//! Fuzzes the parsers of everything a cloud returns to the store: signed metadata and
//! manifests. Neither may panic or allocate beyond its limits on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_store::meta::{Manifest, Metadata};

fuzz_target!(|data: &[u8]| {
    let _ = Metadata::decode_unverified(data);
    let _ = Metadata::decode_verified(data, &[0; 16], &[0; 32], &[]);
    if let Ok(m) = Manifest::decode(data) {
        // Whatever parses must re-encode to the same bytes (canonical encoding).
        assert_eq!(m.encode(), data);
    }
});
