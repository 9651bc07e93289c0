//! Printing objects as YAML (block style, keys in the server's order) for `--dry-run`
//! output and its diff; strings are quoted only where a YAML reader would otherwise read
//! something else, so that the output reads back to the same object.

use podci_model::emit::quote_if_needed;
use serde_json::Value;

/// One YAML document (no `---`), ending with a newline.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => write_map(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => write_seq(a, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote_if_needed(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn write_map(m: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    for (k, v) in m {
        out.push_str(&" ".repeat(indent));
        out.push_str(&quote_if_needed(k));
        out.push(':');
        write_value(v, indent, out);
    }
}

fn write_value(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(m, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_seq(a, indent, out);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn write_seq(a: &[Value], indent: usize, out: &mut String) {
    for item in a {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Value::Object(m) if !m.is_empty() => {
                // First key on the dash line, the rest aligned under it.
                let mut first = true;
                for (k, v) in m {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        out.push_str(&" ".repeat(indent + 2));
                    }
                    out.push_str(&quote_if_needed(k));
                    out.push(':');
                    write_value(v, indent + 2, out);
                }
            }
            Value::Array(inner) if is_block(item) => {
                out.push('\n');
                write_seq(inner, indent + 2, out);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podci_model::yaml::{Limits, load_documents};
    use proptest::prelude::*;
    use serde_json::json;

    fn read_back(text: &str) -> Value {
        load_documents(text, 0, Limits::default()).unwrap()[0].to_json()
    }

    #[test]
    fn block_style() {
        let v = json!({"metadata": {"name": "web", "labels": {}}, "spec": {"containers": [{"name": "app", "image": "r/a:1", "args": ["-x", "yes"]}], "n": 3}});
        let y = to_yaml(&v);
        assert_eq!(
            y,
            "metadata:\n  name: web\n  labels: {}\nspec:\n  containers:\n  - name: app\n    image: r/a:1\n    args:\n    - \"-x\"\n    - \"yes\"\n  n: 3\n"
        );
        assert_eq!(read_back(&y), v);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "\\PC{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-zA-Z0-9_.:/ -]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever JSON object goes in reads back unchanged.
        #[test]
        fn round_trips(m in proptest::collection::btree_map("[a-zA-Z0-9_.:/ -]{1,8}", json_value(), 1..4)) {
            let v = Value::Object(m.into_iter().collect());
            let y = to_yaml(&v);
            prop_assert_eq!(read_back(&y), v, "{}", y);
        }
    }
}
