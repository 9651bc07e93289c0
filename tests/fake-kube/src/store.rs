//! The object store: every object as JSON keyed by (resource, namespace, name), one
//! global resourceVersion counter as etcd's revision, the event history that watches
//! replay from, compaction, and label/field selectors.

use crate::util::ApiError;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::broadcast;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(resource: &str, namespace: &str, name: &str) -> Self {
        Key {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// One change, as a watch delivers it.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub resource: String,
    pub namespace: String,
    pub kind: &'static str,
    pub object: Arc<Value>,
}

pub struct Store {
    pub rv: u64,
    /// resourceVersions at or below this are gone, like after an etcd compaction.
    pub compacted: u64,
    pub objects: BTreeMap<Key, Value>,
    pub history: Vec<Change>,
    pub tx: broadcast::Sender<Change>,
}

impl Store {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Store {
            // Start well above zero so that "0" (any version) is never a real one.
            rv: 100,
            compacted: 0,
            objects: BTreeMap::new(),
            history: Vec::new(),
            tx,
        }
    }

    fn record(&mut self, kind: &'static str, key: &Key, obj: &Value) {
        let c = Change {
            rv: self.rv,
            resource: key.resource.clone(),
            namespace: key.namespace.clone(),
            kind,
            object: Arc::new(obj.clone()),
        };
        self.history.push(c.clone());
        // Receivers may lag or be absent; a watch that lags is ended by its reader.
        let _ = self.tx.send(c);
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Store a new object, stamping resourceVersion.
    pub fn create(&mut self, key: Key, mut obj: Value) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key.clone(), obj.clone());
        self.record("ADDED", &key, &obj);
        obj
    }

    /// Replace an existing object, stamping a new resourceVersion; None if it is gone.
    pub fn update(&mut self, key: &Key, mut obj: Value) -> Option<Value> {
        if !self.objects.contains_key(key) {
            return None;
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key.clone(), obj.clone());
        self.record("MODIFIED", key, &obj);
        Some(obj)
    }

    /// Apply `f` to the stored object and write it back if it changed.
    pub fn modify(&mut self, key: &Key, f: impl FnOnce(&mut Value)) -> Option<Value> {
        let cur = self.objects.get(key)?.clone();
        let mut next = cur.clone();
        f(&mut next);
        if next == cur {
            return Some(cur);
        }
        self.update(key, next)
    }

    pub fn remove(&mut self, key: &Key) -> Option<Value> {
        let mut obj = self.objects.remove(key)?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record("DELETED", key, &obj);
        Some(obj)
    }

    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.resource == resource && namespace.is_none_or(|ns| ns == k.namespace))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// A parsed label selector (`a=b,c!=d,e in (x,y),f notin (z),g,!h`).
#[derive(Debug, Clone, Default)]
pub struct LabelSelector {
    reqs: Vec<LabelReq>,
}

#[derive(Debug, Clone)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        // Split on commas that are not inside parentheses.
        let mut parts = Vec::new();
        let mut depth = 0;
        let mut cur = String::new();
        for ch in s.chars() {
            match ch {
                '(' => {
                    depth += 1;
                    cur.push(ch)
                }
                ')' => {
                    depth -= 1;
                    cur.push(ch)
                }
                ',' if depth == 0 => parts.push(std::mem::take(&mut cur)),
                _ => cur.push(ch),
            }
        }
        parts.push(cur);
        let bad = || {
            ApiError::bad_request(format!(
                "unable to parse requirement: invalid label selector: {s:?}"
            ))
        };
        for p in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            if let Some(k) = p.strip_prefix('!') {
                reqs.push(LabelReq::NotExists(k.trim().into()));
            } else if let Some((k, v)) = p.split_once("!=") {
                reqs.push(LabelReq::Ne(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = p.split_once("==") {
                reqs.push(LabelReq::Eq(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = p.split_once('=') {
                reqs.push(LabelReq::Eq(k.trim().into(), v.trim().into()));
            } else if let Some((k, rest)) = split_word(p, " notin ") {
                reqs.push(LabelReq::NotIn(k, parse_set(&rest).ok_or_else(bad)?));
            } else if let Some((k, rest)) = split_word(p, " in ") {
                reqs.push(LabelReq::In(k, parse_set(&rest).ok_or_else(bad)?));
            } else if p.contains([' ', '(', ')']) {
                return Err(bad());
            } else {
                reqs.push(LabelReq::Exists(p.into()));
            }
        }
        Ok(LabelSelector { reqs })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(|v| v.as_str());
        self.reqs.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }
}

fn split_word(p: &str, word: &str) -> Option<(String, String)> {
    let (k, rest) = p.split_once(word)?;
    Some((k.trim().to_string(), rest.trim().to_string()))
}

fn parse_set(s: &str) -> Option<Vec<String>> {
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

/// A parsed field selector; only the fields the real server supports per resource.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    pub fn parse(s: &str, resource: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, eq, v) = if let Some((k, v)) = p.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = p.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = p.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{p}'"
                )));
            };
            let k = k.trim();
            if !field_supported(resource, k) {
                return Err(ApiError::bad_request(format!("field label not supported: {k}")));
            }
            reqs.push((k.to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector { reqs })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(k, eq, v)| {
            let mut cur = obj;
            for part in k.split('.') {
                cur = &cur[part];
            }
            let actual = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == *v) == *eq
        })
    }
}

fn field_supported(resource: &str, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    match resource {
        "pods" => matches!(
            field,
            "spec.nodeName"
                | "spec.restartPolicy"
                | "spec.schedulerName"
                | "spec.serviceAccountName"
                | "status.phase"
                | "status.podIP"
                | "status.nominatedNodeName"
        ),
        "events" => matches!(
            field,
            "involvedObject.kind"
                | "involvedObject.namespace"
                | "involvedObject.name"
                | "involvedObject.uid"
                | "involvedObject.apiVersion"
                | "involvedObject.resourceVersion"
                | "involvedObject.fieldPath"
                | "reason"
                | "reportingComponent"
                | "source"
                | "type"
        ),
        "secrets" => field == "type",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn selectors_never_panic(s in ".{0,64}") {
            let _ = LabelSelector::parse(&s);
            let _ = FieldSelector::parse(&s, "pods");
        }

        /// A selector of `k=v` pairs taken from an object's labels matches it, and
        /// stops matching when one value differs.
        #[test]
        fn equality_selectors_match_their_labels(
            labels in proptest::collection::btree_map("[a-z][a-z0-9]{0,8}", "[a-z0-9]{1,8}", 1..5)
        ) {
            let obj = json!({"metadata": {"labels": labels}});
            let sel: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            prop_assert!(LabelSelector::parse(&sel.join(",")).unwrap().matches(&obj));
            let (k, v) = labels.iter().next().unwrap();
            let wrong = format!("{k}={v}x");
            prop_assert!(!LabelSelector::parse(&wrong).unwrap().matches(&obj));
            let not_in = format!("{k} notin ({v})");
            prop_assert!(!LabelSelector::parse(&not_in).unwrap().matches(&obj));
        }
    }

    #[test]
    fn label_selectors() {
        let o = json!({"metadata": {"labels": {"app": "ci", "job": "1"}}});
        assert!(LabelSelector::parse("app=ci").unwrap().matches(&o));
        assert!(LabelSelector::parse("app in (x, ci),job").unwrap().matches(&o));
        assert!(!LabelSelector::parse("app notin (ci)").unwrap().matches(&o));
        assert!(LabelSelector::parse("!missing,job!=2").unwrap().matches(&o));
        assert!(!LabelSelector::parse("app=ci,job=2").unwrap().matches(&o));
    }

    #[test]
    fn field_selectors() {
        let o = json!({"metadata": {"name": "a"}, "status": {"phase": "Running"}});
        assert!(
            FieldSelector::parse("metadata.name=a", "pods")
                .unwrap()
                .matches(&o)
        );
        assert!(
            !FieldSelector::parse("status.phase!=Running", "pods")
                .unwrap()
                .matches(&o)
        );
        assert!(FieldSelector::parse("spec.bogus=1", "pods").is_err());
    }

    #[test]
    fn watch_history_and_rv() {
        let mut s = Store::new();
        let k = Key::new("pods", "ns", "a");
        let o = s.create(k.clone(), json!({"metadata": {"name": "a"}}));
        assert_eq!(o["metadata"]["resourceVersion"], "101");
        s.modify(&k, |v| v["x"] = json!(1));
        s.remove(&k);
        let kinds: Vec<_> = s.history.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
        s.compact();
        assert_eq!(s.compacted, 103);
    }
}
