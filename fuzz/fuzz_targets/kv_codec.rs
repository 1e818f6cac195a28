//! Hostile bytes through the KV request/reply decoders and the snapshot restorer (what a
//! Byzantine client or replica controls): never panic; accepted input is canonical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_bft::Application as _;
use rampart_kv::{KvApp, KvReply, KvRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = KvRequest::decode(data) {
        assert_eq!(r.encode(), data, "accepted request must be canonical");
        // Execution of any decodable request is total.
        let _ = KvApp::default().execute(data);
    }
    if let Ok(r) = KvReply::decode(data) {
        assert_eq!(r.encode(), data, "accepted reply must be canonical");
    }
    let mut app = KvApp::default();
    if app.restore(data).is_ok() {
        assert_eq!(app.snapshot(), data, "accepted snapshot must be canonical");
    }
});
