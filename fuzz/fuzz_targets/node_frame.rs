#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cpfs_fuzz::node_frame(data);
});
