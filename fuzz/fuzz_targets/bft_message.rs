//! Hostile bytes through the BFT wire decoder: it must never panic, never allocate beyond
//! the input, and everything it accepts must be canonical (re-encodes to the same bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_bft::{Config, Message, WireLimits};

fuzz_target!(|data: &[u8]| {
    let mut config = Config::new(4);
    // Small limits make the length checks reachable with short inputs.
    config.batch_requests_max = 8;
    config.batch_bytes_max = 4096;
    config.request_op_bytes_max = 256;
    config.reply_bytes_max = 256;
    config.state_chunk_bytes_max = 512;
    config.decisions_per_fetch_max = 4;
    let limits = WireLimits::from_config(&config);
    if let Ok(m) = Message::decode(data, &limits) {
        assert_eq!(m.encode(), data, "accepted input must be canonical");
    }
});
