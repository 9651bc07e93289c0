//! Writing a [`Node`] back as YAML (block style), for `podci lint --preview`.
//!
//! Strings are quoted whenever GitLab's reader would not read them back as the same
//! string, so that the output loads to the same configuration.

use crate::yaml::{Node, Value, resolve_plain, ruby_float};

/// Renders `node` as a YAML document.
pub fn to_yaml(node: &Node) -> String {
    let mut out = String::new();
    match &node.value {
        Value::Map(m) if !m.is_empty() => write_map(&mut out, node, 0),
        Value::Seq(s) if !s.is_empty() => write_seq(&mut out, node, 0),
        _ => {
            out.push_str(&scalar(node, 0));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

fn is_empty_collection(n: &Node) -> Option<&'static str> {
    match &n.value {
        Value::Map(m) if m.is_empty() => Some("{}"),
        Value::Seq(s) | Value::Reference(s) if s.is_empty() => Some("[]"),
        _ => None,
    }
}

fn write_map(out: &mut String, node: &Node, ind: usize) {
    let Value::Map(m) = &node.value else { return };
    for (k, v) in m.iter() {
        indent(out, ind);
        out.push_str(&key(k));
        out.push(':');
        write_value_after_key(out, v, ind);
    }
}

fn write_value_after_key(out: &mut String, v: &Node, ind: usize) {
    if let Some(e) = is_empty_collection(v) {
        out.push(' ');
        out.push_str(e);
        out.push('\n');
        return;
    }
    match &v.value {
        Value::Map(_) => {
            out.push('\n');
            write_map(out, v, ind + 2);
        }
        Value::Seq(_) => {
            out.push('\n');
            write_seq(out, v, ind);
        }
        Value::Reference(items) => {
            out.push_str(" !reference [");
            let parts: Vec<String> = items.iter().map(|i| scalar(i, 0)).collect();
            out.push_str(&parts.join(", "));
            out.push_str("]\n");
        }
        _ => {
            out.push(' ');
            out.push_str(&scalar(v, ind + 2));
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, node: &Node, ind: usize) {
    let Value::Seq(items) = &node.value else { return };
    for item in items {
        indent(out, ind);
        out.push('-');
        if let Some(e) = is_empty_collection(item) {
            out.push(' ');
            out.push_str(e);
            out.push('\n');
            continue;
        }
        match &item.value {
            Value::Map(m) => {
                // First entry on the dash line, the rest indented under it.
                let mut first = true;
                for (k, v) in m.iter() {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        indent(out, ind + 2);
                    }
                    out.push_str(&key(k));
                    out.push(':');
                    write_value_after_key(out, v, ind + 2);
                }
            }
            Value::Seq(_) => {
                out.push('\n');
                write_seq(out, item, ind + 2);
            }
            _ => {
                out.push(' ');
                out.push_str(&scalar(item, ind + 2));
                out.push('\n');
            }
        }
    }
}

fn key(k: &str) -> String {
    quote_if_needed(k)
}

fn scalar(n: &Node, ind: usize) -> String {
    match &n.value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => {
            if f.is_nan() {
                ".nan".into()
            } else if f.is_infinite() {
                if *f > 0.0 { ".inf".into() } else { "-.inf".into() }
            } else {
                ruby_float(*f)
            }
        }
        Value::Str(s) => {
            if s.contains('\n') && block_ok(s) {
                block(s, ind)
            } else {
                quote_if_needed(s)
            }
        }
        Value::Seq(_) | Value::Map(_) | Value::Reference(_) => n.to_json().to_string(),
    }
}

fn block_ok(s: &str) -> bool {
    !s.starts_with(' ') && !s.contains('\r') && !s.contains('\t') && s.lines().all(|l| !l.ends_with(' '))
}

fn block(s: &str, ind: usize) -> String {
    let trailing = s.len() - s.trim_end_matches('\n').len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let mut out = format!("|{chomp}");
    let body = s.trim_end_matches('\n');
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            for _ in 0..ind {
                out.push(' ');
            }
            out.push_str(line);
        }
    }
    for _ in 1..trailing {
        out.push('\n');
    }
    out
}

/// Plain when a YAML reader gives back the same string; otherwise double-quoted (JSON
/// escaping is valid YAML).
pub fn quote_if_needed(s: &str) -> String {
    if needs_quotes(s) {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    } else {
        s.to_string()
    }
}

fn needs_quotes(s: &str) -> bool {
    if s.is_empty() || s.trim() != s {
        return true;
    }
    if !matches!(resolve_plain(s), Value::Str(_)) {
        return true;
    }
    let first = s.chars().next().unwrap_or(' ');
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        // `-x`, `?x`, `:x` are fine as plain scalars only when not followed by space; keep
        // it simple and quote.
        return true;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') || s.contains('\n') || s.contains('\t') {
        return true;
    }
    s.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::{Limits, load_config};

    fn roundtrip(src: &str) {
        let (_, a) = load_config(src, 0, Limits::default()).unwrap();
        let text = to_yaml(&a);
        let (_, b) = load_config(&text, 0, Limits::default()).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(a.to_json(), b.to_json(), "\n{text}");
    }

    #[test]
    fn roundtrips() {
        roundtrip("a: 1\nb: 'yes'\nc: [x, 'y z', '0755', '']\nd: {e: null, f: ~, g: 'a: b'}\n");
        roundtrip(
            "job:\n  script:\n    - |\n      multi\n      line\n    - echo \"# not a comment\"\n  variables: {}\n  tags: []\n",
        );
        roundtrip("a:\n  - - nested\n    - list\n  - {k: v, l: [1, 2]}\n  - - []\n");
        roundtrip("'-x': '- y'\n'key #': '@at'\n");
    }
}
