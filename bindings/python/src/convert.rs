//! Rust values to Python objects: JSON values (payloads, image configs) and YAML nodes
//! of the merged configuration, keeping mapping order.

use podci_model::yaml::{Node, Value};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// A JSON value as the equivalent Python object (`dict`, `list`, `str`, `int`, `float`,
/// `bool`, `None`).
pub fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => py.None().into_bound(py),
        J::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        J::String(s) => s.into_pyobject(py)?.into_any(),
        J::Array(items) => {
            let list = PyList::empty(py);
            for i in items {
                list.append(json_to_py(py, i)?)?;
            }
            list.into_any()
        }
        J::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, json_to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// A YAML node of the merged configuration as a Python object. Unlike JSON, floats such
/// as `.inf` stay floats; an unresolved `!reference` becomes its path list.
pub fn node_to_py<'py>(py: Python<'py>, node: &Node) -> PyResult<Bound<'py, PyAny>> {
    Ok(match &node.value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(f) => f.into_pyobject(py)?.into_any(),
        Value::Str(s) => s.into_pyobject(py)?.into_any(),
        Value::Seq(items) | Value::Reference(items) => {
            let list = PyList::empty(py);
            for i in items {
                list.append(node_to_py(py, i)?)?;
            }
            list.into_any()
        }
        Value::Map(m) => {
            let dict = PyDict::new(py);
            for (k, v) in m.iter() {
                dict.set_item(k, node_to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// A string as Python's `repr()` writes it (`'text'`, or `"it's"`), so that reprs and
/// messages read like Python to Python users.
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            // C0, DEL and C1 controls, as Python escapes them.
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            // Line and paragraph separators are not printable for Python either.
            '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `py_repr` for an optional string (`None` when absent).
pub fn py_repr_opt(s: Option<&str>) -> String {
    s.map_or_else(|| "None".to_string(), py_repr)
}
