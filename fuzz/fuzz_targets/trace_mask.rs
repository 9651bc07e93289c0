//! Streaming masking and end-marker parsing of arbitrary trace bytes: no panics, chunked
//! output equals one-shot output, and the secrets never survive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podci_model::mask::{DEFAULT_TOKEN_PREFIXES, Masker};
use podci_model::script::parse_step_end;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let cut = usize::from(data[0]) % data.len();
    let body = &data[1..];
    let secrets = ["abcdefgh", "abcdefghij", "c@de:fg.h~"];
    let m = Masker::new(secrets, DEFAULT_TOKEN_PREFIXES);
    let want = m.mask_all(body);
    let mut s = m.clone();
    let cut = cut.min(body.len());
    let mut got = s.write(&body[..cut]);
    got.extend(s.write(&body[cut..]));
    got.extend(s.finish());
    assert_eq!(got, want);
    for sec in secrets {
        assert!(!want.windows(sec.len()).any(|w| w == sec.as_bytes()));
    }
    for line in body.split(|&b| b == b'\n') {
        let _ = parse_step_end(line, "nonce123");
    }
});
