//! The GitLab CI expression language of `rules:if`, `workflow:rules:if` and
//! `only:variables` / `except:variables`, parsed and evaluated exactly as GitLab does
//! (`lib/gitlab/ci/pipeline/expression/` in gitlabhq: `lexer.rb`, `parser.rb`,
//! `statement.rb`, `lexeme/*.rb`).
//!
//! This module owns the tokenizer, GitLab's shunting-yard parser (quirks included),
//! evaluation with Ruby's value semantics, GitLab's regex handling (RE2 via
//! `UntrustedRegexp::RubySyntax`, run on the `regex` crate) and the validation messages
//! GitLab prints for an invalid expression. Parse once at validation time (a bad
//! expression is a lint error), evaluate many times against variables.
//!
//! ```
//! use std::collections::HashMap;
//! use podci_model::expr::Expression;
//!
//! let expr = Expression::parse(r#"$CI_COMMIT_BRANCH == "main" || $CI_COMMIT_TAG =~ /^v\d+/"#)?;
//! let vars: HashMap<String, String> = [("CI_COMMIT_TAG".into(), "v1.2".into())].into();
//! assert!(expr.is_truthy(&vars));
//! assert_eq!(expr.variable_names(), ["CI_COMMIT_BRANCH", "CI_COMMIT_TAG"]);
//! # Ok::<(), podci_model::expr::ExprError>(())
//! ```
//!
//! Grammar notes that surprise people, all of them GitLab's behaviour:
//! - `&&` binds tighter than `||`; `==`, `!=`, `=~`, `!~` bind tighter still and are
//!   left-associative (`$A == "x" == $B` is `($A == "x") == $B`).
//! - Strings have no escapes: a string ends at the first matching quote on its line.
//! - A pattern literal needs at least two characters between the slashes (`/a/` is a
//!   syntax error, `/ab/` is not), `\/` inside it stands for `/`, and only the flags
//!   `i`, `m`, `s`, `U` are read (`/a/x` leaves `x` behind, a syntax error).
//! - The parser is GitLab's shunting-yard, which does not check operator positions:
//!   `$A $B ==` is accepted and means `$A == $B`; `$A $B` and `$A ==` are errors.
//! - At most 99 tokens.
//! - `${VAR}` is a syntax error; only `$VAR` with ASCII letters, digits and `_`.
//! - `$A =~ $B` reads `$B`'s value as a `/pattern/`; a value that is no valid pattern is
//!   searched for `$A`'s value as a plain substring (GitLab calls `String#scan`):
//!   `$A =~ $B` is then true when `$A` occurs inside `$B`.
//! - Not supported: the `true`/`false` and `$[[ inputs.NAME ]]` lexemes that GitLab's
//!   newest lexer adds for `spec:inputs:rules` (inputs in job rules are interpolated
//!   before expressions are read).

mod lexer;
mod re2;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

pub use re2::Re2Regex;

use lexer::{TokKind, Token};

/// The message GitLab's `ExpressionValidator` adds to a `rules:if` whose value is not a
/// string or not a valid expression, and the one `Entry::Policy::ComplexPolicy` adds to
/// `only:variables` / `except:variables`: `'Invalid expression syntax'`
/// (gitlabhq `lib/gitlab/config/entry/validators.rb`, `ExpressionValidator`;
/// `lib/gitlab/ci/config/entry/policy.rb`, `variables_expressions_syntax`).
/// `lib/gitlab/config/entry/validator.rb` prints `"#{location} #{full_message}".downcase`,
/// where the full message starts with the humanized attribute (`if`, `variables`).
pub const INVALID_EXPRESSION_SYNTAX: &str = "invalid expression syntax";

/// Template of GitLab's error for an invalid `rules:if` (jobs and `workflow`), with
/// `{location}` the rule entry's location, e.g. `jobs:build:rules:rule` or
/// `workflow:rules:rule`: `jobs:build:rules:rule if invalid expression syntax`.
/// Source: `lib/gitlab/config/entry/validators.rb` (`ExpressionValidator`, attribute
/// `if` of `lib/gitlab/ci/config/entry/rules/rule.rb`) and `lib/gitlab/config/entry/validator.rb`.
pub const RULES_IF_ERROR_TEMPLATE: &str = "{location} if invalid expression syntax";

/// Template of GitLab's error for an invalid `only:variables` / `except:variables`
/// entry, with `{location}` e.g. `jobs:rspec:only`:
/// `jobs:rspec:only variables invalid expression syntax` (the exact string asserted in
/// gitlabhq `spec/lib/gitlab/ci/yaml_processor_spec.rb`). Source:
/// `lib/gitlab/ci/config/entry/policy.rb` (`variables_expressions_syntax`).
pub const POLICY_VARIABLES_ERROR_TEMPLATE: &str = "{location} variables invalid expression syntax";

/// [`RULES_IF_ERROR_TEMPLATE`] filled in, e.g. `rules_if_error("jobs:build:rules:rule")`.
pub fn rules_if_error(location: &str) -> String {
    RULES_IF_ERROR_TEMPLATE.replace("{location}", location)
}

/// [`POLICY_VARIABLES_ERROR_TEMPLATE`] filled in, e.g. `policy_variables_error("jobs:rspec:only")`.
pub fn policy_variables_error(location: &str) -> String {
    POLICY_VARIABLES_ERROR_TEMPLATE.replace("{location}", location)
}

/// Why an expression is invalid. GitLab reports every one of these as
/// [`INVALID_EXPRESSION_SYNTAX`]; the variants say where and why, for a better hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// Nothing but whitespace (GitLab: `StatementError`).
    #[error("the expression is empty")]
    Empty,
    /// Text that starts no token (GitLab: `Lexer::SyntaxError`, "Unknown lexeme found!").
    #[error(
        "unexpected `{found}` at byte {offset}: expected $VARIABLE, \"string\", 'string', /pattern/, null, true, false, ==, !=, =~, !~, &&, || or a parenthesis{hint}"
    )]
    UnknownLexeme {
        offset: usize,
        /// The text there, up to the next whitespace (at most 20 characters).
        found: String,
        /// A suggestion for common mistakes, or empty.
        hint: &'static str,
    },
    /// GitLab stops at 100 tokens ("Too many tokens!").
    #[error(
        "the expression has too many tokens (GitLab accepts at most {max}); the limit is reached at byte {offset}"
    )]
    TooManyTokens { offset: usize, max: usize },
    /// A pattern literal RE2 (or the `regex` crate standing in for it) rejects.
    #[error("invalid regular expression at byte {offset}: {reason}")]
    InvalidRegex { offset: usize, reason: String },
    /// A `)` with no `(` before it (GitLab: "Unmatched parenthesis").
    #[error("unmatched `)` at byte {offset}")]
    UnmatchedParenthesis { offset: usize },
    /// A `(` that is never closed (GitLab: "Unprocessable token found in parse tree").
    #[error("the `(` at byte {offset} is never closed")]
    UnclosedParenthesis { offset: usize },
    /// An operator without a value on one side (GitLab: `OperatorError`).
    #[error("the operator `{op}` at byte {offset} has no {side} operand")]
    MissingOperand {
        offset: usize,
        op: &'static str,
        side: &'static str,
    },
    /// Two values with no operator joining them (GitLab: "Unreachable nodes in parse tree").
    #[error("the value at byte {offset} is not joined to the rest by an operator")]
    UnexpectedValue { offset: usize },
    /// GitLab's `Statement#valid?` also evaluates the expression with no variables; these
    /// expressions fail there (GitLab raises an internal error for them).
    #[error("the expression cannot be evaluated: {0}")]
    Evaluation(#[from] EvalError),
}

impl ExprError {
    /// The source line holding the problem with a caret under it, then the message:
    /// a terminal-friendly rendering for lint output.
    ///
    /// ```
    /// # use podci_model::expr::Expression;
    /// let src = "$A == ${B}";
    /// let err = Expression::parse(src).unwrap_err();
    /// assert!(err.render(src).starts_with("$A == ${B}\n      ^ unexpected `${B}`"));
    /// ```
    pub fn render(&self, source: &str) -> String {
        let offset = self.offset().min(source.len());
        let line_start = source
            .get(..offset)
            .and_then(|s| s.rfind('\n'))
            .map_or(0, |p| p + 1);
        let line_end = source
            .get(offset..)
            .and_then(|s| s.find('\n'))
            .map_or(source.len(), |p| offset + p);
        let line = source.get(line_start..line_end).unwrap_or_default();
        let column = source.get(line_start..offset).map_or(0, |s| s.chars().count());
        format!("{line}\n{}^ {self}", " ".repeat(column))
    }

    /// Byte offset of the problem in the source (0 for an empty expression).
    pub fn offset(&self) -> usize {
        match self {
            ExprError::Empty => 0,
            ExprError::UnknownLexeme { offset, .. }
            | ExprError::TooManyTokens { offset, .. }
            | ExprError::InvalidRegex { offset, .. }
            | ExprError::UnmatchedParenthesis { offset }
            | ExprError::UnclosedParenthesis { offset }
            | ExprError::MissingOperand { offset, .. }
            | ExprError::UnexpectedValue { offset } => *offset,
            ExprError::Evaluation(e) => e.offset(),
        }
    }
}

/// An evaluation that raises in GitLab. GitLab's `Statement#truthful?` only rescues its
/// own `ExpressionError`s; these are Ruby `NoMethodError`s that abort pipeline creation
/// there. podci treats them as "false" in [`Expression::is_truthy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// `/re/ == x` where `x` is not a pattern: `UntrustedRegexp#==` calls `x.source`.
    #[error("a /pattern/ at byte {offset} can only be compared with another /pattern/")]
    PatternComparison { offset: usize },
    /// `$A =~ (…)` where the right side evaluated to `true`: GitLab calls `true.gsub`.
    #[error("the right side of `{op}` at byte {offset} evaluated to a boolean, not a pattern or string")]
    BooleanPattern { offset: usize, op: &'static str },
}

impl EvalError {
    /// Byte offset of the operator that failed.
    pub fn offset(&self) -> usize {
        match self {
            EvalError::PatternComparison { offset } | EvalError::BooleanPattern { offset, .. } => *offset,
        }
    }
}

/// A `/re/flags` text that GitLab's `UntrustedRegexp::RubySyntax` would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid regular expression: {reason}")]
pub struct RegexError {
    /// Why: not of the form `/re/flags` (flags from `ismU`), or RE2 rejects the body.
    pub reason: String,
}

/// `Gitlab::UntrustedRegexp::RubySyntax.fabricate!`: compiles a `/re/flags` text (flags
/// from `ismU`; GitLab's check uses Ruby's line anchors, so the first line of that form in
/// a multi-line text is the one taken) with RE2's syntax and semantics. GitLab uses the same reading for `only:refs`/`except:refs` patterns.
/// Unlike a pattern literal in an expression, `\/` is not unescaped first. Compiled
/// patterns are cached process-wide.
pub fn ruby_syntax_regexp(text: &str) -> Result<Arc<Re2Regex>, RegexError> {
    re2::fabricate_cached(text).map_err(|reason| RegexError { reason })
}

/// The binary operators, with GitLab's precedences (lower binds tighter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Equals,
    NotEquals,
    Matches,
    NotMatches,
    And,
    Or,
}

impl Op {
    /// `self.precedence` of each lexeme: 10 for comparisons, 11 for `&&`, 12 for `||`
    /// (they follow Ruby's operator precedence table).
    pub fn precedence(self) -> u16 {
        match self {
            Op::Equals | Op::NotEquals | Op::Matches | Op::NotMatches => 10,
            Op::And => 11,
            Op::Or => 12,
        }
    }

    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Equals => "==",
            Op::NotEquals => "!=",
            Op::Matches => "=~",
            Op::NotMatches => "!~",
            Op::And => "&&",
            Op::Or => "||",
        }
    }

    /// GitLab's lexeme name, as `LogicalOperator#inspect` prints it.
    fn gitlab_name(self) -> &'static str {
        match self {
            Op::Equals => "equals",
            Op::NotEquals => "not_equals",
            Op::Matches => "matches",
            Op::NotMatches => "not_matches",
            Op::And => "and",
            Op::Or => "or",
        }
    }
}

/// A node of the parse tree. Offsets are byte offsets into the source; equality ignores
/// them (and compares patterns by their text), so re-parsed printouts compare equal.
#[derive(Debug, Clone)]
pub enum Node {
    /// `$NAME`
    Variable { name: String, offset: usize },
    /// `"value"` or `'value'`
    String {
        value: String,
        quote: char,
        offset: usize,
    },
    /// `/re/flags`, compiled once at parse time.
    Pattern {
        raw: String,
        regex: Arc<Re2Regex>,
        offset: usize,
    },
    /// `null`
    Null { offset: usize },
    /// `true` / `false`
    Bool { value: bool, offset: usize },
    /// `left op right`; `offset` is the operator's.
    Binary {
        op: Op,
        left: Box<Node>,
        right: Box<Node>,
        offset: usize,
    },
}

impl PartialEq for Node {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Node::Variable { name: a, .. }, Node::Variable { name: b, .. }) => a == b,
            (Node::String { value: a, .. }, Node::String { value: b, .. }) => a == b,
            (Node::Pattern { raw: a, .. }, Node::Pattern { raw: b, .. }) => a == b,
            (Node::Null { .. }, Node::Null { .. }) => true,
            (Node::Bool { value: a, .. }, Node::Bool { value: b, .. }) => a == b,
            (
                Node::Binary {
                    op: o1,
                    left: l1,
                    right: r1,
                    ..
                },
                Node::Binary {
                    op: o2,
                    left: l2,
                    right: r2,
                    ..
                },
            ) => o1 == o2 && l1 == l2 && r1 == r2,
            _ => false,
        }
    }
}

impl Node {
    /// Offset of the leftmost token of this subtree.
    fn start(&self) -> usize {
        match self {
            Node::Variable { offset, .. }
            | Node::String { offset, .. }
            | Node::Pattern { offset, .. }
            | Node::Null { offset }
            | Node::Bool { offset, .. } => *offset,
            Node::Binary {
                left, right, offset, ..
            } => left.start().min(right.start()).min(*offset),
        }
    }

    fn precedence(&self) -> u16 {
        match self {
            Node::Binary { op, .. } => op.precedence(),
            _ => 0,
        }
    }

    fn write_inspect(&self, out: &mut String) {
        match self {
            Node::Variable { name, .. } => {
                out.push('$');
                out.push_str(name);
            }
            Node::String { value, .. } => {
                out.push('"');
                for c in value.chars() {
                    match c {
                        '"' | '\\' => {
                            out.push('\\');
                            out.push(c);
                        }
                        _ => out.push(c),
                    }
                }
                out.push('"');
            }
            Node::Pattern { raw, .. } => out.push_str(raw),
            Node::Null { .. } => out.push_str("null"),
            Node::Bool { value, .. } => out.push_str(if *value { "true" } else { "false" }),
            Node::Binary { op, left, right, .. } => {
                out.push_str(op.gitlab_name());
                out.push('(');
                left.write_inspect(out);
                out.push_str(", ");
                right.write_inspect(out);
                out.push(')');
            }
        }
    }
}

/// Prints the expression with the fewest parentheses that keep its tree (GitLab's
/// operators are left-associative), so that the printout parses back to an equal tree.
impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Variable { name, .. } => write!(f, "${name}"),
            Node::String { value, quote, .. } => write!(f, "{quote}{value}{quote}"),
            Node::Pattern { raw, .. } => f.write_str(raw),
            Node::Null { .. } => f.write_str("null"),
            Node::Bool { value, .. } => f.write_str(if *value { "true" } else { "false" }),
            Node::Binary { op, left, right, .. } => {
                let p = op.precedence();
                if left.precedence() > p {
                    write!(f, "({left})")?;
                } else {
                    write!(f, "{left}")?;
                }
                write!(f, " {} ", op.as_str())?;
                if right.precedence() >= p {
                    write!(f, "({right})")
                } else {
                    write!(f, "{right}")
                }
            }
        }
    }
}

/// The variables an expression is evaluated against. A missing variable is `null`.
///
/// For `rules:if` GitLab passes the job's variables as they are, without expanding
/// references inside values (`Rules::Rule::Clause::If` uses `context.variables_hash`, not
/// `variables_hash_expanded`: `lib/gitlab/ci/build/rules/rule/clause/if.rb`,
/// `lib/gitlab/ci/build/context/base.rb`).
pub trait Variables {
    /// The value of `name`, or `None` when it is not defined.
    fn get(&self, name: &str) -> Option<&str>;
}

impl<S: BuildHasher> Variables for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

impl Variables for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

impl<S: BuildHasher> Variables for indexmap::IndexMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        indexmap::IndexMap::get(self, name).map(String::as_str)
    }
}

impl<T: Variables + ?Sized> Variables for &T {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }
}

/// No variables at all: every `$VAR` is `null`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoVariables;

impl Variables for NoVariables {
    fn get(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// Variables looked up by a closure, for callers whose variables live elsewhere:
/// `FnVariables::new(|name| my_store.lookup(name))`.
pub struct FnVariables<'v, F>
where
    F: Fn(&str) -> Option<&'v str>,
{
    lookup: F,
    _values: std::marker::PhantomData<&'v str>,
}

impl<'v, F> FnVariables<'v, F>
where
    F: Fn(&str) -> Option<&'v str>,
{
    /// Wraps `lookup`, which returns a variable's value or `None` when it is undefined.
    pub fn new(lookup: F) -> Self {
        FnVariables {
            lookup,
            _values: std::marker::PhantomData,
        }
    }
}

impl<'v, F> Variables for FnVariables<'v, F>
where
    F: Fn(&str) -> Option<&'v str>,
{
    fn get(&self, name: &str) -> Option<&str> {
        (self.lookup)(name)
    }
}

/// The value an expression evaluates to, as GitLab's Ruby objects: `nil`, `true`/`false`,
/// a `String`, or an `UntrustedRegexp` (a pattern, as in `$A || /re/`).
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    String(String),
    Regexp(Arc<Re2Regex>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::String(a), Value::String(b)) => a == b,
            (Value::Regexp(a), Value::Regexp(b)) => a.source() == b.source(),
            _ => false,
        }
    }
}

impl Value {
    /// ActiveSupport's `present?`, which `Statement#truthful?` applies to the result:
    /// `nil`, `false` and blank strings (empty or only whitespace) are not present.
    pub fn is_present(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::String(s) => !is_blank(s),
            Value::Regexp(_) => true,
        }
    }
}

/// ActiveSupport `String#blank?`: `/\A[[:space:]]*\z/`, Unicode whitespace included.
fn is_blank(s: &str) -> bool {
    s.chars().all(char::is_whitespace)
}

/// A value during evaluation, borrowing strings from the variables and the tree.
#[derive(Clone)]
enum Val<'a> {
    Null,
    Bool(bool),
    Str(&'a str),
    Re(Arc<Re2Regex>),
}

impl Val<'_> {
    /// Ruby truthiness, which `&&` and `||` use: only `nil` and `false` are falsy.
    fn ruby_truthy(&self) -> bool {
        !matches!(self, Val::Null | Val::Bool(false))
    }

    fn into_value(self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(b),
            Val::Str(s) => Value::String(s.to_owned()),
            Val::Re(r) => Value::Regexp(r),
        }
    }

    fn is_present(&self) -> bool {
        match self {
            Val::Null => false,
            Val::Bool(b) => *b,
            Val::Str(s) => !is_blank(s),
            Val::Re(_) => true,
        }
    }
}

/// A parsed GitLab CI expression. Parsing validates it as GitLab's
/// `Statement#valid?` does; evaluation never fails and never panics.
#[derive(Clone)]
pub struct Expression {
    source: String,
    root: Node,
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expression")
            .field("source", &self.source)
            .field("root", &self.root)
            .finish()
    }
}

impl PartialEq for Expression {
    /// Same tree; the source text may differ in spacing and parentheses.
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root
    }
}

/// Prints a canonical form of the expression that parses back to the same tree.
impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root.fmt(f)
    }
}

/// Serialized as its source text, so pipelines carrying rules can be serialized as written.
impl serde::Serialize for Expression {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

/// Deserialized from source text, which must be a valid expression.
impl<'de> serde::Deserialize<'de> for Expression {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Expression::parse(&source).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Expression {
    type Err = ExprError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Expression::parse(s)
    }
}

impl Expression {
    /// Parses and validates `src` as GitLab's `Statement#valid?` does: lex, parse, and
    /// evaluate once with no variables.
    pub fn parse(src: &str) -> Result<Expression, ExprError> {
        let tokens = lexer::tokenize(src)?;
        if tokens.is_empty() {
            return Err(ExprError::Empty);
        }
        let root = build_tree(tokens)?;
        let expr = Expression {
            source: src.to_owned(),
            root,
        };
        expr.eval(&expr.root, &NoVariables)?;
        Ok(expr)
    }

    /// GitLab's result value (`Statement#evaluate`). An evaluation GitLab would abort
    /// with an internal error (see [`EvalError`]) yields [`Value::Null`]; use
    /// [`Expression::try_evaluate`] to see it.
    pub fn evaluate(&self, vars: &dyn Variables) -> Value {
        self.try_evaluate(vars).unwrap_or(Value::Null)
    }

    /// Like [`Expression::evaluate`], reporting evaluations that raise in GitLab.
    pub fn try_evaluate(&self, vars: &dyn Variables) -> Result<Value, EvalError> {
        self.eval(&self.root, vars).map(Val::into_value)
    }

    /// `Statement#truthful?`: the result is `present?`; an error counts as false.
    pub fn is_truthy(&self, vars: &dyn Variables) -> bool {
        self.eval(&self.root, vars).is_ok_and(|v| v.is_present())
    }

    /// Names of the variables the expression reads, in order of first appearance.
    pub fn variable_names(&self) -> Vec<&str> {
        fn walk<'a>(node: &'a Node, out: &mut Vec<&'a str>) {
            match node {
                Node::Variable { name, .. } if !out.contains(&name.as_str()) => out.push(name),
                Node::Binary { left, right, .. } => {
                    walk(left, out);
                    walk(right, out);
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }

    /// The text the expression was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The parse tree.
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// The tree in GitLab's `inspect` notation, e.g. `or(and($A, $B), equals($C, "x"))`,
    /// the form GitLab's parser specs compare against.
    pub fn inspect(&self) -> String {
        let mut out = String::new();
        self.root.write_inspect(&mut out);
        out
    }

    fn eval<'a>(&'a self, node: &'a Node, vars: &'a dyn Variables) -> Result<Val<'a>, EvalError> {
        Ok(match node {
            Node::Variable { name, .. } => vars.get(name).map_or(Val::Null, Val::Str),
            Node::String { value, .. } => Val::Str(value),
            Node::Pattern { regex, .. } => Val::Re(Arc::clone(regex)),
            Node::Null { .. } => Val::Null,
            Node::Bool { value, .. } => Val::Bool(*value),
            Node::Binary {
                op,
                left,
                right,
                offset,
            } => match op {
                Op::And => {
                    let l = self.eval(left, vars)?;
                    if l.ruby_truthy() {
                        self.eval(right, vars)?
                    } else {
                        l
                    }
                }
                Op::Or => {
                    let l = self.eval(left, vars)?;
                    if l.ruby_truthy() {
                        l
                    } else {
                        self.eval(right, vars)?
                    }
                }
                Op::Equals | Op::NotEquals => {
                    let l = self.eval(left, vars)?;
                    let r = self.eval(right, vars)?;
                    let eq = ruby_eq(&l, &r).ok_or(EvalError::PatternComparison { offset: *offset })?;
                    Val::Bool(eq == (*op == Op::Equals))
                }
                Op::Matches | Op::NotMatches => {
                    let text = self.eval(left, vars)?;
                    let pattern = self.eval(right, vars)?;
                    let positive = *op == Op::Matches;
                    // `return false unless regexp` (`!~`: `return true unless regexp`).
                    if !pattern.ruby_truthy() {
                        return Ok(Val::Bool(!positive));
                    }
                    let text = ruby_to_s(&text);
                    let found = match pattern {
                        Val::Re(re) => re.is_match(text),
                        Val::Str(s) => match self.variable_pattern(s) {
                            Some(re) => re.is_match(text),
                            // Not a pattern: GitLab keeps the string and calls
                            // `string.scan(text)`, a substring search for `text`.
                            None => s.contains(text),
                        },
                        Val::Bool(_) | Val::Null => {
                            return Err(EvalError::BooleanPattern {
                                offset: *offset,
                                op: op.as_str(),
                            });
                        }
                    };
                    Val::Bool(found == positive)
                }
            },
        })
    }

    /// `Lexeme::Pattern.build_and_evaluate(string)`: a variable's value (or a string
    /// literal) on the right of `=~` is a pattern when `RubySyntax` can fabricate it
    /// after `\/` is replaced by `/`.
    fn variable_pattern(&self, value: &str) -> Option<Arc<Re2Regex>> {
        if value.contains("\\/") {
            re2::fabricate_cached(&value.replace("\\/", "/")).ok()
        } else {
            re2::fabricate_cached(value).ok()
        }
    }
}

/// Ruby's `==` on the values: `None` where Ruby raises (`UntrustedRegexp#==` calls
/// `other.source`, which only another pattern has).
fn ruby_eq(l: &Val<'_>, r: &Val<'_>) -> Option<bool> {
    Some(match (l, r) {
        (Val::Re(a), Val::Re(b)) => a.source() == b.source(),
        (Val::Re(_), _) => return None,
        (Val::Null, Val::Null) => true,
        (Val::Bool(a), Val::Bool(b)) => a == b,
        (Val::Str(a), Val::Str(b)) => a == b,
        _ => false,
    })
}

/// Ruby's `to_s`, which `=~` applies to its left side.
fn ruby_to_s<'a>(v: &'a Val<'a>) -> &'a str {
    match v {
        Val::Null => "",
        Val::Bool(true) => "true",
        Val::Bool(false) => "false",
        Val::Str(s) => s,
        // `Object#to_s` of an UntrustedRegexp; GitLab's also carries an object address.
        Val::Re(_) => "#<Gitlab::UntrustedRegexp>",
    }
}

/// An entry of GitLab's operator stack / RPN output.
enum Rpn {
    Value(Token),
    Op(Op, usize),
    LParen(usize),
}

impl Rpn {
    fn precedence(&self) -> u16 {
        match self {
            Rpn::Value(_) => 0,
            Rpn::Op(op, _) => op.precedence(),
            // `ParenthesisOpen.precedence`: above every operator and `)` (900).
            Rpn::LParen(_) => 901,
        }
    }
}

/// `Parser#tokens_rpn` then `Parser#tree`, GitLab's shunting-yard algorithm. It does not
/// check where operators stand, only that each finds two operands in the RPN.
fn build_tree(tokens: Vec<Token>) -> Result<Node, ExprError> {
    const RPAREN_PRECEDENCE: u16 = 900;
    let mut output: Vec<Rpn> = Vec::with_capacity(tokens.len());
    let mut operators: Vec<Rpn> = Vec::new();
    for token in tokens {
        match token.kind {
            TokKind::Op(op) => {
                // `consume?`: pop while the stack top binds at least as tightly.
                while operators
                    .last()
                    .is_some_and(|top| op.precedence() >= top.precedence())
                {
                    output.extend(operators.pop());
                }
                operators.push(Rpn::Op(op, token.offset));
            }
            TokKind::LParen => operators.push(Rpn::LParen(token.offset)),
            TokKind::RParen => {
                while operators
                    .last()
                    .is_some_and(|top| RPAREN_PRECEDENCE >= top.precedence())
                {
                    output.extend(operators.pop());
                }
                match operators.pop() {
                    Some(Rpn::LParen(_)) => {}
                    _ => {
                        return Err(ExprError::UnmatchedParenthesis { offset: token.offset });
                    }
                }
            }
            _ => output.push(Rpn::Value(token)),
        }
    }
    output.extend(operators.into_iter().rev());

    let mut results: Vec<Node> = Vec::new();
    for item in output {
        match item {
            Rpn::Value(token) => results.push(leaf(token)?),
            Rpn::Op(op, offset) => {
                let right = results.pop();
                let left = results.pop();
                let (left, right) = match (left, right) {
                    (Some(l), Some(r)) => (l, r),
                    (_, right) => {
                        // GitLab pops the right operand first and so always reports
                        // "Invalid left operand"; name the side actually missing instead.
                        let side = match right {
                            None => "left or right",
                            Some(r) if r.start() > offset => "left",
                            Some(_) => "right",
                        };
                        return Err(ExprError::MissingOperand {
                            offset,
                            op: op.as_str(),
                            side,
                        });
                    }
                };
                results.push(Node::Binary {
                    op,
                    left: Box::new(left),
                    right: Box::new(right),
                    offset,
                });
            }
            Rpn::LParen(offset) => return Err(ExprError::UnclosedParenthesis { offset }),
        }
    }
    if results.len() > 1 {
        let offset = results.get(1).map_or(0, Node::start);
        return Err(ExprError::UnexpectedValue { offset });
    }
    results.pop().ok_or(ExprError::Empty)
}

fn leaf(token: Token) -> Result<Node, ExprError> {
    let offset = token.offset;
    Ok(match token.kind {
        TokKind::Variable(name) => Node::Variable { name, offset },
        TokKind::Str(value, quote) => Node::String { value, quote, offset },
        TokKind::Null => Node::Null { offset },
        TokKind::Bool(value) => Node::Bool { value, offset },
        TokKind::Pattern(raw) => {
            // `Lexeme::Pattern#initialize`: unescape `\/`, then it must fabricate.
            let regex = re2::fabricate_cached(&raw.replace("\\/", "/"))
                .map_err(|reason| ExprError::InvalidRegex { offset, reason })?;
            Node::Pattern { raw, regex, offset }
        }
        // Operators and parentheses never reach the RPN output as values.
        TokKind::Op(_) | TokKind::LParen | TokKind::RParen => {
            return Err(ExprError::UnexpectedValue { offset });
        }
    })
}

#[cfg(test)]
mod tests;
