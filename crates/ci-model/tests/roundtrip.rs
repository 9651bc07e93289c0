//! Property tests: loading never panics, and `emit::to_yaml` output loads back to the same
//! tree (what `podci lint --preview` relies on).

use podci_model::emit::to_yaml;
use podci_model::yaml::{Limits, Mapping, Node, Value, load_config};
use podci_model::{LoadOptions, MemorySource};
use proptest::prelude::*;

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-1_000_000i64..1_000_000).prop_map(Value::Int),
        // Strings that look like other types, YAML indicators, spaces, newlines, unicode.
        prop_oneof![
            "[a-zA-Z0-9 _./:$#{}\\[\\],&*!|>'\"%@`?-]{0,20}",
            Just("yes".to_string()),
            Just("0755".to_string()),
            Just("1:30".to_string()),
            Just("~".to_string()),
            Just("line one\nline two\n".to_string()),
            Just(" leading".to_string()),
            "\\PC{0,8}",
        ]
        .prop_map(Value::Str),
    ]
}

fn tree() -> impl Strategy<Value = Node> {
    let leaf = scalar().prop_map(Node::synthetic);
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| Node::synthetic(Value::Seq(v))),
            prop::collection::vec(("[a-z_.][a-z0-9_ :-]{0,8}", inner), 0..5).prop_map(|entries| {
                let mut m = Mapping::new();
                for (k, v) in entries {
                    m.insert(k, Default::default(), v);
                }
                Node::synthetic(Value::Map(m))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn emitted_yaml_loads_back(entries in prop::collection::vec(("[a-z][a-z0-9_-]{0,8}", tree()), 0..6)) {
        let mut m = Mapping::new();
        for (k, v) in entries {
            m.insert(k, Default::default(), v);
        }
        let doc = Node::synthetic(Value::Map(m));
        let text = to_yaml(&doc);
        let (_, back) = load_config(&text, 0, Limits::default())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let want = doc.to_json();
        // An empty mapping is written as `{}` and read back as the same.
        prop_assert_eq!(back.to_json(), want, "\n{}", text);
    }

    #[test]
    fn load_never_panics(text in "\\PC{0,200}") {
        let src = MemorySource::new().with_file("a.yml", &text);
        let _ = podci_model::load(".gitlab-ci.yml", &text, &src, &LoadOptions::default());
    }

    #[test]
    fn yamlish_soup_never_panics(parts in prop::collection::vec(prop_oneof![
        Just("job:\n"), Just("  script: x\n"), Just("  extends: .a\n"), Just(".a:\n"),
        Just("  needs: [job]\n"), Just("include: a.yml\n"), Just("<<: *x\n"), Just("&x "),
        Just("!reference [.a, script]"), Just("- "), Just("  "), Just("stages: [a]\n"),
        Just("  parallel:\n    matrix:\n      - A: [1, 2]\n"), Just("  rules:\n    - if: $X\n"),
        Just("{"), Just("}"), Just("["), Just("]"), Just(": "), Just("\n"), Just("'"), Just("\""),
    ], 0..40)) {
        let text: String = parts.concat();
        let src = MemorySource::new().with_file("a.yml", &text);
        let p = podci_model::load(".gitlab-ci.yml", &text, &src, &LoadOptions::default());
        if p.is_valid() {
            let again = to_yaml(&p.config);
            let q = podci_model::load(".gitlab-ci.yml", &again, &src, &LoadOptions::default());
            prop_assert_eq!(p.config.to_json(), q.config.to_json(), "\n{}", again);
        }
    }
}
