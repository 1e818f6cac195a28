//! Hostile bytes (a corrupt disk) through the durable-entry decoder: never panic, never
//! allocate beyond the limits; accepted input re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_bft::{Config, PersistEntry};

fuzz_target!(|data: &[u8]| {
    let mut config = Config::new(4);
    config.batch_requests_max = 8;
    config.batch_bytes_max = 4096;
    config.request_op_bytes_max = 256;
    config.reply_bytes_max = 256;
    config.state_bytes_max = 4096;
    config.clients_max = 4;
    if let Ok(e) = PersistEntry::decode(data, &config) {
        assert_eq!(e.encode(), data, "accepted entry must be canonical");
    }
});
