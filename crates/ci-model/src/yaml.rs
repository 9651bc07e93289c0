//! YAML loading with a source position on every node.
//!
//! GitLab reads `.gitlab-ci.yml` with Ruby's Psych (YAML 1.1 scalars, `<<` merge keys,
//! aliases, the custom `!reference` tag). This module reproduces what Psych's `safe_load`
//! produces, keeping `file:line:column` for each node so that every diagnostic can point
//! at its source. It also enforces GitLab's size and depth limits, which also protects us
//! from alias bombs.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span as PSpan};

/// Where a node came from: which loaded file (an index into [`SourceMap`]) and where in it
/// (both 1-based).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// Index of the file in the [`SourceMap`] of the pipeline.
    pub file: u32,
    /// Line, 1-based.
    pub line: u32,
    /// Column, 1-based.
    pub col: u32,
}

/// Names of the files that spans point into.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<String>,
}

impl SourceMap {
    /// Registers a file name and returns its index (existing names are reused).
    pub fn add(&mut self, name: &str) -> u32 {
        if let Some(i) = self.files.iter().position(|f| f == name) {
            return i as u32;
        }
        self.files.push(name.to_string());
        (self.files.len() - 1) as u32
    }

    /// The name of file `index`, or `""` for an unknown index.
    pub fn name(&self, index: u32) -> &str {
        self.files.get(index as usize).map(String::as_str).unwrap_or("")
    }

    /// All registered file names, in registration order.
    pub fn files(&self) -> &[String] {
        &self.files
    }
}

/// A YAML value with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where the value starts.
    pub span: Span,
}

/// The kinds of values Psych's `safe_load` produces for GitLab's loader.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `~`, `null`, an empty value.
    Null,
    /// YAML 1.1 booleans (`true`, `yes`, `on`, ... in any case).
    Bool(bool),
    /// Integers, including YAML 1.1 octal (`0755`), hex, binary and base-60 forms.
    Int(i64),
    /// Floats, including `.inf` and `.nan`.
    Float(f64),
    /// Strings. `symbol` is true for Ruby symbols (`:foo`), which GitLab keeps distinct.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in Ruby hash order (first insertion position, last value wins).
    Map(Mapping),
    /// `!reference [path, to, node]`, resolved after `extends`.
    Reference(Vec<Node>),
}

/// An ordered mapping with string keys (GitLab symbolizes keys; non-string scalar keys are
/// kept as their YAML text). Large mappings (the root of a big pipeline has thousands of
/// jobs) keep a hash index so that lookups stay O(1).
#[derive(Clone, Debug, Default)]
pub struct Mapping {
    entries: Vec<(String, Span, Node)>,
    index: Option<HashMap<String, usize>>,
}

/// Mappings with more entries than this get a hash index.
const INDEX_THRESHOLD: usize = 12;

impl PartialEq for Mapping {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Mapping {
    /// An empty mapping.
    pub fn new() -> Self {
        Self::default()
    }

    fn position(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(ix) => ix.get(key).copied(),
            None => self.entries.iter().position(|(k, _, _)| k == key),
        }
    }

    fn reindex(&mut self) {
        if self.entries.len() > INDEX_THRESHOLD {
            let ix: HashMap<String, usize> = self
                .entries
                .iter()
                .enumerate()
                .map(|(i, (k, _, _))| (k.clone(), i))
                .collect();
            self.index = Some(ix);
        } else {
            self.index = None;
        }
    }

    /// Inserts like Ruby's `hash[key] = value`: an existing key keeps its position and takes
    /// the new value (and the new key span).
    pub fn insert(&mut self, key: String, key_span: Span, value: Node) {
        if let Some(i) = self.position(&key) {
            let e = &mut self.entries[i];
            e.1 = key_span;
            e.2 = value;
            return;
        }
        if let Some(ix) = &mut self.index {
            ix.insert(key.clone(), self.entries.len());
            self.entries.push((key, key_span, value));
        } else {
            self.entries.push((key, key_span, value));
            if self.entries.len() > INDEX_THRESHOLD {
                self.reindex();
            }
        }
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.position(key).map(|i| &self.entries[i].2)
    }

    /// The value for `key`, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        self.position(key).map(|i| &mut self.entries[i].2)
    }

    /// The span of `key` itself (where the key is written).
    pub fn key_span(&self, key: &str) -> Option<Span> {
        self.position(key).map(|i| self.entries[i].1)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Removes `key`, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Node> {
        let i = self.position(key)?;
        let node = self.entries.remove(i).2;
        if self.index.is_some() {
            self.reindex();
        }
        Some(node)
    }

    /// Entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.entries.iter().map(|(k, _, v)| (k.as_str(), v))
    }

    /// Entries in order, with the key's span.
    pub fn iter_spanned(&self) -> impl Iterator<Item = (&str, Span, &Node)> {
        self.entries.iter().map(|(k, s, v)| (k.as_str(), *s, v))
    }

    /// The value of the `i`-th entry, mutably.
    pub fn value_at_mut(&mut self, i: usize) -> Option<&mut Node> {
        self.entries.get_mut(i).map(|(_, _, v)| v)
    }

    /// Entries in order, values mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut Node)> {
        self.entries.iter_mut().map(|(k, _, v)| (k.as_str(), v))
    }

    /// Keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _, _)| k.as_str())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the mapping is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Consumes the mapping into its entries.
    pub fn into_entries(self) -> Vec<(String, Span, Node)> {
        self.entries
    }
}

impl Node {
    /// A node without a meaningful position (for values podci makes up).
    pub fn synthetic(value: Value) -> Self {
        Node {
            value,
            span: Span::default(),
        }
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The mapping, if this is one.
    pub fn as_map(&self) -> Option<&Mapping> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The sequence, if this is one.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self.value {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// A scalar as text the way Ruby's `to_s` would print it (`nil` is empty).
    pub fn scalar_to_string(&self) -> Option<String> {
        match &self.value {
            Value::Null => Some(String::new()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(ruby_float(*f)),
            Value::Str(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// Converts to JSON (what GitLab's API or `--json` shows). `!reference` that was never
    /// resolved becomes its path list.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or_else(|| J::String(ruby_float(*f))),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(s) | Value::Reference(s) => J::Array(s.iter().map(Node::to_json).collect()),
            Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.to_string(), v.to_json())).collect()),
        }
    }

    /// Ruby's class name for error messages such as "should be a hash".
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "nil",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Seq(_) | Value::Reference(_) => "array",
            Value::Map(_) => "hash",
        }
    }
}

/// Ruby's `Float#to_s`.
pub fn ruby_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// Limits GitLab applies to a parsed file (`Gitlab::Config::Loader::Yaml` with the
/// application settings `max_yaml_size_bytes`, default 2 MB, and `max_yaml_depth`, 100).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Maximum size of the parsed data, measured like `Gitlab::Utils::DeepSize` does
    /// (an approximation: bytes of strings plus a fixed cost per node).
    pub max_size: usize,
    /// Maximum nesting depth.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_size: 2 * 1024 * 1024,
            max_depth: 100,
        }
    }
}

/// Why a file could not be loaded. Messages are GitLab's.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LoadError {
    /// A YAML syntax error. The message follows Psych's form.
    #[error("(<unknown>): {message} at line {line} column {col}")]
    Syntax {
        /// What the parser said.
        message: String,
        /// Line, 1-based.
        line: u32,
        /// Column, 1-based.
        col: u32,
    },
    /// An alias to an anchor that does not exist.
    #[error("(<unknown>): Unknown alias: {name}")]
    UnknownAlias {
        /// Anchor name as far as known.
        name: String,
        /// Where.
        span: Span,
    },
    /// The data exceeds [`Limits::max_size`] or [`Limits::max_depth`].
    #[error("The parsed YAML is too big")]
    TooBig,
    /// The document is not a mapping.
    #[error("Invalid configuration format")]
    NotHash,
}

impl LoadError {
    /// Where the problem is, when known (line and column, 1-based).
    pub fn position(&self) -> Option<(u32, u32)> {
        match self {
            LoadError::Syntax { line, col, .. } => Some((*line, *col)),
            LoadError::UnknownAlias { span, .. } => Some((span.line, span.col)),
            _ => None,
        }
    }
}

/// A loaded YAML stream: its documents.
pub type Documents = Vec<Node>;

/// Parses every document of `src`, tagging spans with file index `file`.
pub fn load_documents(src: &str, file: u32, limits: Limits) -> Result<Documents, LoadError> {
    let mut b = Builder {
        file,
        limits,
        anchors: HashMap::new(),
        stack: Vec::new(),
        docs: Vec::new(),
        size: 0,
    };
    let parser = Parser::new_from_str(src);
    for item in parser {
        let (ev, span) = item.map_err(|e| {
            let m = e.marker();
            LoadError::Syntax {
                message: e.info().to_string(),
                line: m.line() as u32,
                col: m.col() as u32 + 1,
            }
        })?;
        b.event(ev, span)?;
    }
    Ok(b.docs)
}

/// Loads a single-document configuration file the way GitLab does: the file must be a
/// mapping (an empty file is an empty mapping). A first document holding only `spec:`
/// (the CI/CD component header) is returned separately.
pub fn load_config(src: &str, file: u32, limits: Limits) -> Result<(Option<Node>, Node), LoadError> {
    let mut docs = load_documents(src, file, limits)?;
    let header = if docs.len() > 1 && is_spec_header(&docs[0]) {
        Some(docs.remove(0))
    } else {
        None
    };
    let doc = docs.into_iter().next().unwrap_or_else(|| Node {
        value: Value::Map(Mapping::new()),
        span: Span {
            file,
            line: 1,
            col: 1,
        },
    });
    match doc.value {
        Value::Map(_) => Ok((header, doc)),
        Value::Null => Ok((
            header,
            Node {
                value: Value::Map(Mapping::new()),
                span: doc.span,
            },
        )),
        _ => Err(LoadError::NotHash),
    }
}

fn is_spec_header(doc: &Node) -> bool {
    doc.as_map()
        .is_some_and(|m| m.len() == 1 && m.contains_key("spec"))
}

enum Frame {
    Seq {
        items: Vec<Node>,
        span: Span,
        anchor: usize,
        reference: bool,
    },
    Map {
        map: Mapping,
        span: Span,
        anchor: usize,
        pending_key: Option<(Node, bool)>,
    },
}

struct Builder {
    file: u32,
    limits: Limits,
    anchors: HashMap<usize, Node>,
    stack: Vec<Frame>,
    docs: Vec<Node>,
    size: usize,
}

/// Cost charged per node towards [`Limits::max_size`], roughly Ruby's object overhead.
const NODE_COST: usize = 40;

impl Builder {
    fn span(&self, s: PSpan) -> Span {
        Span {
            file: self.file,
            line: s.start.line() as u32,
            col: s.start.col() as u32 + 1,
        }
    }

    fn charge(&mut self, n: &Node) -> Result<(), LoadError> {
        self.size = self.size.saturating_add(deep_size(n));
        if self.size > self.limits.max_size {
            return Err(LoadError::TooBig);
        }
        Ok(())
    }

    fn event(&mut self, ev: Event<'_>, ps: PSpan) -> Result<(), LoadError> {
        let span = self.span(ps);
        match ev {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
            Event::DocumentStart(_) => {
                self.anchors.clear();
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id).cloned() else {
                    return Err(LoadError::UnknownAlias {
                        name: id.to_string(),
                        span,
                    });
                };
                self.charge(&node)?;
                let node = Node { span, ..node };
                self.push(node, true)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                let tag_str = tag.as_ref().map(|t| format!("{}{}", t.handle, t.suffix));
                let plain = matches!(style, ScalarStyle::Plain);
                let value = match tag_str.as_deref() {
                    Some("tag:yaml.org,2002:str") | Some("!!str") => Value::Str(text.to_string()),
                    Some("!reference") => Value::Reference(Vec::new()),
                    _ if plain => resolve_plain(&text),
                    _ => Value::Str(text.to_string()),
                };
                let node = Node { value, span };
                self.size = self.size.saturating_add(NODE_COST + heap_len(&text));
                if self.size > self.limits.max_size {
                    return Err(LoadError::TooBig);
                }
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                // A plain `<<` key (not `!!str`) is a merge key.
                let is_merge_key = plain && tag_str.is_none() && text == "<<";
                self.push(node, is_merge_key)?;
            }
            Event::SequenceStart(anchor, tag) => {
                let reference = tag
                    .as_ref()
                    .is_some_and(|t| t.handle == "!" && t.suffix == "reference");
                self.open(Frame::Seq {
                    items: Vec::new(),
                    span,
                    anchor,
                    reference,
                })?;
            }
            Event::MappingStart(anchor, _tag) => {
                self.open(Frame::Map {
                    map: Mapping::new(),
                    span,
                    anchor,
                    pending_key: None,
                })?;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Ok(());
                };
                let (node, anchor) = match frame {
                    Frame::Seq {
                        items,
                        span,
                        anchor,
                        reference,
                    } => (
                        Node {
                            value: if reference {
                                Value::Reference(items)
                            } else {
                                Value::Seq(items)
                            },
                            span,
                        },
                        anchor,
                    ),
                    Frame::Map {
                        map, span, anchor, ..
                    } => (
                        Node {
                            value: Value::Map(map),
                            span,
                        },
                        anchor,
                    ),
                };
                self.size = self.size.saturating_add(NODE_COST);
                if self.size > self.limits.max_size {
                    return Err(LoadError::TooBig);
                }
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node, false)?;
            }
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame) -> Result<(), LoadError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(LoadError::TooBig);
        }
        self.stack.push(frame);
        Ok(())
    }

    /// Adds a finished node to the innermost open collection (or as a document).
    /// `merge_key` marks a plain `<<` scalar, which only matters in key position.
    fn push(&mut self, node: Node, merge_key: bool) -> Result<(), LoadError> {
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { map, pending_key, .. }) => match pending_key.take() {
                None => *pending_key = Some((node, merge_key)),
                Some((key, is_merge)) => {
                    if is_merge && matches!(node.value, Value::Map(_) | Value::Seq(_)) {
                        merge_into(map, key, node);
                    } else {
                        let k = key_string(&key);
                        map.insert(k, key.span, node);
                    }
                }
            },
        }
        Ok(())
    }
}

/// Psych's `<<` handling: a mapping is merged over the hash built so far (`merge!`, so it
/// overrides keys written before `<<`); a sequence of mappings is merged with earlier
/// mappings winning. Anything else is stored under the key `<<`.
fn merge_into(map: &mut Mapping, key: Node, value: Node) {
    match value.value {
        Value::Map(m) => {
            for (k, s, v) in m.into_entries() {
                map.insert(k, s, v);
            }
        }
        Value::Seq(items) => {
            if items.iter().all(|i| matches!(i.value, Value::Map(_))) {
                let mut merged = Mapping::new();
                for item in items.into_iter().rev() {
                    if let Value::Map(m) = item.value {
                        for (k, s, v) in m.into_entries() {
                            merged.insert(k, s, v);
                        }
                    }
                }
                for (k, s, v) in merged.into_entries() {
                    map.insert(k, s, v);
                }
            } else {
                map.insert(
                    "<<".into(),
                    key.span,
                    Node {
                        value: Value::Seq(items),
                        span: value.span,
                    },
                );
            }
        }
        other => map.insert(
            "<<".into(),
            key.span,
            Node {
                value: other,
                span: value.span,
            },
        ),
    }
}

/// The key text GitLab's `deep_symbolize_keys` would end up with.
fn key_string(key: &Node) -> String {
    match &key.value {
        Value::Str(s) => s.clone(),
        Value::Null => String::new(),
        Value::Seq(_) | Value::Map(_) | Value::Reference(_) => key.to_json().to_string(),
        _ => key.scalar_to_string().unwrap_or_default(),
    }
}

/// Ruby embeds strings of up to 23 bytes in the object slot; longer ones use the heap.
fn heap_len(s: &str) -> usize {
    if s.len() > 23 { s.len() + 1 } else { 0 }
}

fn deep_size(n: &Node) -> usize {
    NODE_COST
        + match &n.value {
            Value::Str(s) => heap_len(s),
            Value::Seq(items) | Value::Reference(items) => items.iter().map(deep_size).sum(),
            Value::Map(m) => m.iter().map(|(k, v)| heap_len(k) + deep_size(v)).sum(),
            _ => 0,
        }
}

/// Resolves a plain scalar as Psych's `ScalarScanner#tokenize` does (YAML 1.1 types).
pub fn resolve_plain(s: &str) -> Value {
    if s.is_empty() {
        return Value::Null;
    }
    let bytes = s.as_bytes();
    let first = bytes[0];
    // Psych: strings that start like words are only checked against the short keywords.
    let wordish = looks_like_word(s) || s.contains('\n');
    if wordish {
        if s.len() > 5 {
            return Value::Str(s.into());
        }
        let lower = s.to_ascii_lowercase();
        if !matches!(
            first.to_ascii_lowercase(),
            b'y' | b't' | b'o' | b'n' | b'f' | b'~'
        ) {
            return Value::Str(s.into());
        }
        return match lower.as_str() {
            "~" | "null" => Value::Null,
            "yes" | "true" | "on" => Value::Bool(true),
            "no" | "false" | "off" => Value::Bool(false),
            _ => Value::Str(s.into()),
        };
    }
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        ".inf" | "+.inf" => return Value::Float(f64::INFINITY),
        "-.inf" => return Value::Float(f64::NEG_INFINITY),
        ".nan" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(v) = sexagesimal(s) {
        return v;
    }
    if let Some(f) = parse_float(s) {
        return Value::Float(f);
    }
    if let Some(i) = parse_int(s) {
        return Value::Int(i);
    }
    Value::Str(s.into())
}

/// Psych's `/^[^\d.:-]?[[:alpha:]_\s!@#$%\^&*(){}<>|\/\\~;=]+/` (a prefix match).
fn looks_like_word(s: &str) -> bool {
    let is_word_char =
        |c: char| c.is_alphabetic() || c == '_' || c.is_whitespace() || "!@#$%^&*(){}<>|/\\~;=".contains(c);
    let mut chars = s.chars();
    let Some(c0) = chars.next() else { return false };
    if is_word_char(c0) {
        return true;
    }
    // The optional first char may be anything but a digit, '.', ':' or '-'.
    if c0.is_ascii_digit() || matches!(c0, '.' | ':' | '-') {
        return false;
    }
    chars.next().is_some_and(is_word_char)
}

/// `/^[-+]?[0-9][0-9_]*(:[0-5]?[0-9]){1,2}$/` (and the float variant) as base 60.
fn sexagesimal(s: &str) -> Option<Value> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let parts: Vec<&str> = body.split(':').collect();
    if parts.len() < 2 || parts.len() > 3 {
        return None;
    }
    let head = parts[0];
    if head.is_empty()
        || !head.as_bytes()[0].is_ascii_digit()
        || !head.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    let last = parts.len() - 1;
    let mut frac: Option<&str> = None;
    for (i, p) in parts.iter().enumerate().skip(1) {
        let digits = if i == last {
            match p.split_once('.') {
                Some((d, f)) => {
                    if !f.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
                        return None;
                    }
                    frac = Some(f);
                    d
                }
                None => p,
            }
        } else {
            p
        };
        let ok = match digits.len() {
            1 => digits.as_bytes()[0].is_ascii_digit(),
            2 => (b'0'..=b'5').contains(&digits.as_bytes()[0]) && digits.as_bytes()[1].is_ascii_digit(),
            _ => false,
        };
        if !ok {
            return None;
        }
    }
    let mut total: f64 = 0.0;
    let mut itotal: i64 = 0;
    let n = parts.len() as u32;
    for (e, p) in parts.iter().enumerate() {
        let p = p.split('.').next().unwrap_or("");
        let v: i64 = p.replace('_', "").parse().ok()?;
        let mult = 60i64.checked_pow(n - 1 - e as u32)?;
        itotal = itotal.checked_add(v.checked_mul(mult)?)?;
        total += v as f64 * mult as f64;
    }
    let sign = if neg { -1 } else { 1 };
    match frac {
        Some(f) => {
            let f: f64 = format!("0.{}", f.replace('_', "")).parse().unwrap_or(0.0);
            Some(Value::Float(sign as f64 * (total + f)))
        }
        None => Some(Value::Int(sign * itotal)),
    }
}

/// Psych's FLOAT: `/^(?:[-+]?([0-9][0-9_,]*)?\.[0-9]*([eE][-+][0-9]+)?)$/`, not a lone `.`.
fn parse_float(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        i += 1;
    }
    let int_start = i;
    if i < b.len() && b[i].is_ascii_digit() {
        i += 1;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_' || b[i] == b',') {
            i += 1;
        }
    }
    let int_part = &s[int_start..i];
    if i >= b.len() || b[i] != b'.' {
        return None;
    }
    i += 1;
    let frac_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let frac = &s[frac_start..i];
    let mut exp = "";
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let e_start = i;
        i += 1;
        if i >= b.len() || !(b[i] == b'-' || b[i] == b'+') {
            return None;
        }
        i += 1;
        let d = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == d {
            return None;
        }
        exp = &s[e_start..i];
    }
    if i != b.len() {
        return None;
    }
    if int_part.is_empty() && frac.is_empty() {
        return None;
    }
    let sign = if b[0] == b'-' { "-" } else { "" };
    let clean: String = format!(
        "{sign}{}.{}{}",
        if int_part.is_empty() { "0" } else { int_part },
        if frac.is_empty() { "0" } else { frac },
        exp
    )
    .chars()
    .filter(|c| *c != '_' && *c != ',')
    .collect();
    clean.parse().ok()
}

/// Psych's legacy INTEGER regex, then Ruby's `Integer()` on the text without `,` and `_`.
fn parse_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let clean = |t: &str| t.chars().filter(|c| *c != '_' && *c != ',').collect::<String>();
    let v = if let Some(bin) = body.strip_prefix("0b") {
        if bin.is_empty() || !bin.bytes().all(|c| matches!(c, b'0' | b'1' | b'_' | b',')) {
            return None;
        }
        i64::from_str_radix(&clean(bin), 2).ok()?
    } else if let Some(hex) = body.strip_prefix("0x") {
        if hex.is_empty()
            || !hex
                .bytes()
                .all(|c| c.is_ascii_hexdigit() || c == b'_' || c == b',')
        {
            return None;
        }
        i64::from_str_radix(&clean(hex), 16).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        let oct = &body[1..];
        if !oct.bytes().all(|c| matches!(c, b'0'..=b'7' | b'_' | b',')) {
            return None;
        }
        let c = clean(oct);
        if c.is_empty() {
            0
        } else {
            i64::from_str_radix(&c, 8).ok()?
        }
    } else {
        // [-+]?(?:0|[1-9](?:[0-9]|,[0-9]|_[0-9])*)
        let b = body.as_bytes();
        if b.is_empty() || !b[0].is_ascii_digit() {
            return None;
        }
        if b[0] == b'0' && b.len() > 1 {
            return None;
        }
        let mut i = 1;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                i += 1;
            } else if (b[i] == b',' || b[i] == b'_') && i + 1 < b.len() && b[i + 1].is_ascii_digit() {
                i += 2;
            } else {
                return None;
            }
        }
        clean(body).parse().ok()?
    };
    Some(if neg { -v } else { v })
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str) -> Node {
        load_config(src, 0, Limits::default())
            .map(|(_, d)| d)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn yaml11_scalars_as_psych() {
        for (text, want) in [
            ("yes", Value::Bool(true)),
            ("No", Value::Bool(false)),
            ("ON", Value::Bool(true)),
            ("off", Value::Bool(false)),
            ("~", Value::Null),
            ("NULL", Value::Null),
            ("0755", Value::Int(493)),
            ("0x1F", Value::Int(31)),
            ("0b101", Value::Int(5)),
            ("1_000", Value::Int(1000)),
            ("1,000", Value::Int(1000)),
            ("1:30", Value::Int(90)),
            ("-1:00:01", Value::Int(-3601)),
            ("1.5", Value::Float(1.5)),
            ("1e3", Value::Str("1e3".into())),
            ("1.0e+3", Value::Float(1000.0)),
            (".5", Value::Float(0.5)),
            ("08", Value::Str("08".into())),
            ("1001:1001", Value::Str("1001:1001".into())),
            ("yesterday", Value::Str("yesterday".into())),
            ("y", Value::Str("y".into())),
            ("ruby:3.1", Value::Str("ruby:3.1".into())),
            ("12", Value::Int(12)),
        ] {
            let got = resolve_plain(text);
            assert_eq!(got, want, "{text}");
        }
        assert!(matches!(resolve_plain(".NaN"), Value::Float(f) if f.is_nan()));
    }

    #[test]
    fn quoted_scalars_stay_strings() {
        let d = load("a: 'yes'\nb: \"0755\"\nc: !!str on\n");
        let m = d.as_map().unwrap();
        assert_eq!(m.get("a").unwrap().as_str(), Some("yes"));
        assert_eq!(m.get("b").unwrap().as_str(), Some("0755"));
        assert_eq!(m.get("c").unwrap().as_str(), Some("on"));
    }

    #[test]
    fn spans_are_one_based() {
        let d = load("job:\n  script:\n    - echo hi\n");
        let m = d.as_map().unwrap();
        assert_eq!(m.key_span("job").map(|s| (s.line, s.col)), Some((1, 1)));
        let job = m.get("job").unwrap().as_map().unwrap();
        assert_eq!(job.key_span("script").map(|s| (s.line, s.col)), Some((2, 3)));
        let script = job.get("script").unwrap().as_seq().unwrap();
        assert_eq!((script[0].span.line, script[0].span.col), (3, 7));
    }

    #[test]
    fn merge_keys_follow_psych() {
        // Psych's merge! lets `<<` override keys written before it; later keys win over it.
        let d = load(".a: &a\n  x: 1\n  y: 2\nj:\n  x: 0\n  <<: *a\n  y: 3\n");
        let j = d.as_map().unwrap().get("j").unwrap().as_map().unwrap();
        assert_eq!(j.get("x").unwrap().as_int(), Some(1));
        assert_eq!(j.get("y").unwrap().as_int(), Some(3));
        assert_eq!(j.keys().collect::<Vec<_>>(), vec!["x", "y"]);
        // A list of maps: earlier maps win.
        let d = load("a: &a {k: 1}\nb: &b {k: 2, l: 2}\nc:\n  <<: [*a, *b]\n");
        let c = d.as_map().unwrap().get("c").unwrap().as_map().unwrap();
        assert_eq!(c.get("k").unwrap().as_int(), Some(1));
        assert_eq!(c.get("l").unwrap().as_int(), Some(2));
    }

    #[test]
    fn duplicate_keys_keep_position_last_value_wins() {
        let d = load("a: 1\nb: 2\na: 3\n");
        let m = d.as_map().unwrap();
        assert_eq!(m.keys().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(m.get("a").unwrap().as_int(), Some(3));
    }

    #[test]
    fn reference_tag() {
        let d = load("a:\n  script: !reference [.setup, script]\n");
        let s = d
            .as_map()
            .unwrap()
            .get("a")
            .unwrap()
            .as_map()
            .unwrap()
            .get("script")
            .unwrap();
        match &s.value {
            Value::Reference(p) => assert_eq!(p.len(), 2),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn syntax_error_has_position() {
        let e = load_config("a: [1, 2\nb: 3\n", 0, Limits::default()).unwrap_err();
        let (line, col) = e.position().unwrap();
        assert!(line >= 1 && col >= 1, "{e}");
        assert!(e.to_string().starts_with("(<unknown>): "), "{e}");
    }

    #[test]
    fn not_a_hash_and_empty() {
        assert_eq!(
            load_config("- a\n", 0, Limits::default()).unwrap_err(),
            LoadError::NotHash
        );
        assert!(load("").as_map().unwrap().is_empty());
    }

    #[test]
    fn alias_bomb_is_too_big() {
        let mut s = String::from("a0: &a0 [\"xxxxxxxxxxxxxxxxxxxxxxx\", \"yyyyyyyyyyyyyyyyyyy\"]\n");
        for i in 1..30 {
            s.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}]\n", p = i - 1));
        }
        assert_eq!(
            load_config(&s, 0, Limits::default()).unwrap_err(),
            LoadError::TooBig
        );
    }

    #[test]
    fn deep_nesting_is_too_big() {
        let s = "[".repeat(150) + &"]".repeat(150);
        assert_eq!(
            load_config(&format!("a: {s}"), 0, Limits::default()).unwrap_err(),
            LoadError::TooBig
        );
    }
}
