//! Fuzzes the segment reader: arbitrary bytes after the segment magic, read frame by frame.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rampart_log::fuzzing::segment(data);
});
