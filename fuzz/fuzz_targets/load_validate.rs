//! Any bytes through load + include + extends + !reference + validate + emit: no panic,
//! and a valid configuration written back as YAML loads to the same configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podci_model::{LoadOptions, MemorySource};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The input is also an includable file, so include recursion is exercised.
    let source = MemorySource::new().with_file("a.yml", text).with_file("ci/b.yml", text);
    let p = podci_model::load(".gitlab-ci.yml", text, &source, &LoadOptions::default());
    for d in &p.diagnostics {
        let _ = d.display(&p.sources).to_string();
    }
    if p.is_valid() {
        let again = podci_model::emit::to_yaml(&p.config);
        let q = podci_model::load(".gitlab-ci.yml", &again, &source, &LoadOptions::default());
        assert_eq!(p.config.to_json(), q.config.to_json(), "preview output does not load back:\n{again}");
    }
});
