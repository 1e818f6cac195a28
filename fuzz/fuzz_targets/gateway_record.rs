//! The gateway's record decoder (per-object S3 attributes) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = rampart_gateway::Record::decode(data) {
        // Whatever decodes re-encodes to something that decodes to the same record.
        assert_eq!(rampart_gateway::Record::decode(&r.encode()).ok(), Some(r));
    }
});
