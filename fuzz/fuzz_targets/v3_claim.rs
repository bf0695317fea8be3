#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cpfs_fuzz::v3_claim(data);
});
