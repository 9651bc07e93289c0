//! Tests ported from gitlabhq's specs (`spec/lib/gitlab/ci/pipeline/expression/`:
//! `statement_spec.rb`, `parser_spec.rb`, `lexer_spec.rb`, `lexeme/*_spec.rb`): the
//! tables are GitLab's facts, reproduced case by case.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::lexer::{TokKind, tokenize};
use super::*;

/// The variables of `statement_spec.rb`.
fn statement_vars() -> HashMap<String, String> {
    [
        ("PRESENT_VARIABLE", "my variable"),
        ("PATH_VARIABLE", "a/path/variable/value"),
        ("FULL_PATH_VARIABLE", "/a/full/path/variable/value"),
        ("EMPTY_VARIABLE", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn parse(src: &str) -> Expression {
    match Expression::parse(src) {
        Ok(e) => e,
        Err(e) => panic!("`{src}` should parse: {e}"),
    }
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

const T: Value = Value::Bool(true);
const F: Value = Value::Bool(false);
const NIL: Value = Value::Null;

/// statement_spec.rb `#evaluate`: every row of the table.
#[test]
fn statement_evaluate_table() {
    let vars = statement_vars();
    let table: &[(&str, Value)] = &[
        (r#"$PRESENT_VARIABLE == "my variable""#, T),
        (r#""my variable" == $PRESENT_VARIABLE"#, T),
        ("$PRESENT_VARIABLE == null", F),
        ("$EMPTY_VARIABLE == null", F),
        (r#""" == $EMPTY_VARIABLE"#, T),
        ("$EMPTY_VARIABLE", s("")),
        ("$UNDEFINED_VARIABLE == null", T),
        ("null == $UNDEFINED_VARIABLE", T),
        ("$PRESENT_VARIABLE", s("my variable")),
        ("$UNDEFINED_VARIABLE", NIL),
        ("$PRESENT_VARIABLE =~ /var.*e$/", T),
        (r"$PRESENT_VARIABLE =~ /va\r.*e$/", F),
        (r"$PRESENT_VARIABLE =~ /va\/r.*e$/", F),
        ("$PRESENT_VARIABLE =~ /^var.*/", F),
        ("$EMPTY_VARIABLE =~ /var.*/", F),
        ("$UNDEFINED_VARIABLE =~ /var.*/", F),
        ("$PRESENT_VARIABLE =~ /VAR.*/i", T),
        (r"$PATH_VARIABLE =~ /path\/variable/", T),
        (r"$FULL_PATH_VARIABLE =~ /^\/a\/full\/path\/variable\/value$/", T),
        (r"$FULL_PATH_VARIABLE =~ /\/path\/variable\/value$/", T),
        (r#"$PRESENT_VARIABLE != "my variable""#, F),
        (r#""my variable" != $PRESENT_VARIABLE"#, F),
        ("$PRESENT_VARIABLE != null", T),
        ("$EMPTY_VARIABLE != null", T),
        (r#""" != $EMPTY_VARIABLE"#, F),
        ("$UNDEFINED_VARIABLE != null", F),
        ("null != $UNDEFINED_VARIABLE", F),
        ("$PRESENT_VARIABLE !~ /var.*e$/", F),
        ("$PRESENT_VARIABLE !~ /^var.*/", T),
        (r"$PRESENT_VARIABLE !~ /^v\ar.*/", T),
        (r"$PRESENT_VARIABLE !~ /^v\/ar.*/", T),
        ("$EMPTY_VARIABLE !~ /var.*/", T),
        ("$UNDEFINED_VARIABLE !~ /var.*/", T),
        ("$PRESENT_VARIABLE !~ /VAR.*/i", F),
        // `&&` returns one of its operands, with Ruby truthiness ("" is truthy).
        (r#"$PRESENT_VARIABLE && "string""#, s("string")),
        ("$PRESENT_VARIABLE && $PRESENT_VARIABLE", s("my variable")),
        ("$PRESENT_VARIABLE && $EMPTY_VARIABLE", s("")),
        ("$PRESENT_VARIABLE && null", NIL),
        (r#""string" && $PRESENT_VARIABLE"#, s("my variable")),
        ("$EMPTY_VARIABLE && $PRESENT_VARIABLE", s("my variable")),
        ("null && $PRESENT_VARIABLE", NIL),
        (r#"$EMPTY_VARIABLE && "string""#, s("string")),
        ("$EMPTY_VARIABLE && $EMPTY_VARIABLE", s("")),
        (r#""string" && $EMPTY_VARIABLE"#, s("")),
        (r#""string" && null"#, NIL),
        (r#"null && "string""#, NIL),
        (r#""string" && "string""#, s("string")),
        ("null && null", NIL),
        ("$PRESENT_VARIABLE =~ /my var/ && $EMPTY_VARIABLE =~ /nope/", F),
        (r#"$EMPTY_VARIABLE == "" && $PRESENT_VARIABLE"#, s("my variable")),
        (r#"$EMPTY_VARIABLE == "" && $PRESENT_VARIABLE != "nope""#, T),
        ("$PRESENT_VARIABLE && $UNDEFINED_VARIABLE", NIL),
        ("$UNDEFINED_VARIABLE && $EMPTY_VARIABLE", NIL),
        ("$UNDEFINED_VARIABLE && $PRESENT_VARIABLE", NIL),
        (
            r"$FULL_PATH_VARIABLE =~ /^\/a\/full\/path\/variable\/value$/ && $PATH_VARIABLE =~ /path\/variable/",
            T,
        ),
        (
            r"$FULL_PATH_VARIABLE =~ /^\/a\/bad\/path\/variable\/value$/ && $PATH_VARIABLE =~ /path\/variable/",
            F,
        ),
        (
            r"$FULL_PATH_VARIABLE =~ /^\/a\/full\/path\/variable\/value$/ && $PATH_VARIABLE =~ /bad\/path\/variable/",
            F,
        ),
        (
            r"$FULL_PATH_VARIABLE =~ /^\/a\/bad\/path\/variable\/value$/ && $PATH_VARIABLE =~ /bad\/path\/variable/",
            F,
        ),
        (
            r"$FULL_PATH_VARIABLE =~ /^\/a\/full\/path\/variable\/value$/ || $PATH_VARIABLE =~ /path\/variable/",
            T,
        ),
        (
            r"$FULL_PATH_VARIABLE =~ /^\/a\/bad\/path\/variable\/value$/ || $PATH_VARIABLE =~ /path\/variable/",
            T,
        ),
        (
            r"$FULL_PATH_VARIABLE =~ /^\/a\/full\/path\/variable\/value$/ || $PATH_VARIABLE =~ /bad\/path\/variable/",
            T,
        ),
        (
            r"$FULL_PATH_VARIABLE =~ /^\/a\/bad\/path\/variable\/value$/ || $PATH_VARIABLE =~ /bad\/path\/variable/",
            F,
        ),
        ("$PRESENT_VARIABLE =~ /my var/ || $EMPTY_VARIABLE =~ /nope/", T),
        (r#"$EMPTY_VARIABLE == "" || $PRESENT_VARIABLE"#, T),
        (r#"$PRESENT_VARIABLE != "nope" || $EMPTY_VARIABLE == """#, T),
        (r#"$PRESENT_VARIABLE && null || $EMPTY_VARIABLE == """#, T),
        ("$PRESENT_VARIABLE || $UNDEFINED_VARIABLE", s("my variable")),
        ("$UNDEFINED_VARIABLE || $PRESENT_VARIABLE", s("my variable")),
        ("$UNDEFINED_VARIABLE == null || $PRESENT_VARIABLE", T),
        (
            "$PRESENT_VARIABLE || $UNDEFINED_VARIABLE == null",
            s("my variable"),
        ),
        ("($PRESENT_VARIABLE)", s("my variable")),
        ("(($PRESENT_VARIABLE))", s("my variable")),
        (r#"(($PRESENT_VARIABLE && null) || $EMPTY_VARIABLE == "")"#, T),
        (r#"($PRESENT_VARIABLE) && (null || $EMPTY_VARIABLE == "")"#, T),
        (r#"("string" || "test") == "string""#, T),
        (r#"(null || ("test" == "string"))"#, F),
        (r#"("string" == ("test" && "string"))"#, T),
        (r#"("string" == ("test" || "string"))"#, F),
        (r#"("string" == "test" || "string")"#, s("string")),
        (r#"("string" == ("string" || (("1" == "1") && ("2" == "3"))))"#, T),
    ];
    for (src, want) in table {
        assert_eq!(&parse(src).evaluate(&vars), want, "{src}");
    }
}

/// statement_spec.rb `#truthful?`: `evaluate.present?`, errors are false.
#[test]
fn statement_truthful_table() {
    let vars = statement_vars();
    let table = [
        (r#"$PRESENT_VARIABLE == "my variable""#, true),
        ("$PRESENT_VARIABLE == 'no match'", false),
        ("$UNDEFINED_VARIABLE == null", true),
        ("$PRESENT_VARIABLE", true),
        ("$UNDEFINED_VARIABLE", false),
        ("$EMPTY_VARIABLE", false),
        ("$PRESENT_VARIABLE =~ /var.*/", true),
        ("$UNDEFINED_VARIABLE =~ /var.*/", false),
        ("$PRESENT_VARIABLE !~ /var.*/", false),
        ("$UNDEFINED_VARIABLE !~ /var.*/", true),
    ];
    for (src, want) in table {
        assert_eq!(parse(src).is_truthy(&vars), want, "{src}");
    }
    // '$INVALID = 1' | false: `=` is no lexeme, so GitLab's truthful? rescues the
    // syntax error; here it is a parse error.
    assert!(matches!(
        Expression::parse("$INVALID = 1"),
        Err(ExprError::UnknownLexeme { offset: 9, .. })
    ));
}

/// statement_spec.rb "when variables have patterns": the right side of `=~` may be a
/// variable holding `/re/`; a value that is not a pattern is searched for the left side
/// as a plain substring (`String#scan`).
#[test]
fn variables_holding_patterns() {
    let vars: HashMap<String, String> = [
        ("teststring", "abcde"),
        ("pattern1", "/^ab.*/"),
        ("pattern2", "/^at.*/"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (src, want) in [
        (r#"$teststring =~ "abcde""#, true),
        ("$teststring =~ $teststring", true),
        ("$teststring =~ $pattern1", true),
        ("$teststring =~ $pattern2", false),
        ("$teststring !~ $pattern2", true),
    ] {
        assert_eq!(parse(src).is_truthy(&vars), want, "{src}");
    }
}

/// Matches#evaluate falls back to `String#scan` when the value is not a valid pattern:
/// `"release-1".scan("release")` finds the left side inside the right side.
#[test]
fn non_pattern_right_side_is_reverse_substring_search() {
    let vars = BTreeMap::from([
        ("BRANCH".to_owned(), "rel".to_owned()),
        ("LIST".to_owned(), "main release stable".to_owned()),
        ("BAD".to_owned(), "/(unclosed/".to_owned()),
        ("EMPTY".to_owned(), String::new()),
    ]);
    assert!(parse("$BRANCH =~ $LIST").is_truthy(&vars));
    assert!(!parse("$LIST =~ $BRANCH").is_truthy(&vars));
    // An invalid pattern value is a plain string too.
    assert!(parse(r#""clo" =~ $BAD"#).is_truthy(&vars));
    assert!(!parse("$BRANCH =~ $BAD").is_truthy(&vars));
    // `"".scan("")` is `[""]`, present: an empty string is found in anything.
    assert!(parse("$UNDEFINED =~ $EMPTY").is_truthy(&vars));
    assert!(parse("$EMPTY =~ $LIST").is_truthy(&vars));
    assert!(!parse("$BRANCH =~ $EMPTY").is_truthy(&vars));
    // `return false unless regexp`: an undefined right side never matches.
    assert!(!parse("$BRANCH =~ $UNDEFINED").is_truthy(&vars));
    assert!(parse("$BRANCH !~ $UNDEFINED").is_truthy(&vars));
}

/// A variable's value is unescaped (`\/` -> `/`) and read with RubySyntax, flags included.
#[test]
fn variable_pattern_flags_and_escapes() {
    let vars = HashMap::from([
        ("P".to_owned(), r"/^A\/B$/i".to_owned()),
        ("V".to_owned(), "a/b".to_owned()),
    ]);
    let e = parse("$V =~ $P");
    assert!(e.is_truthy(&vars));
    // The second evaluation is served by the per-expression cache: same answer.
    assert!(e.is_truthy(&vars));
}

/// RubySyntax only knows the flags `ismU`: a value like `/ab/x` is not a pattern, so it
/// is searched as a plain string (`"/ab/x".scan("ab")`).
#[test]
fn variable_value_with_unknown_flag_is_a_plain_string() {
    let e = parse("$V =~ $P");
    let vars = |v: &str| {
        HashMap::from([
            ("P".to_owned(), "/ab/x".to_owned()),
            ("V".to_owned(), v.to_owned()),
        ])
    };
    assert!(e.is_truthy(&vars("ab")));
    assert!(e.is_truthy(&vars("/x")));
    assert!(!e.is_truthy(&vars("xab")));
}

/// Expressions are parsed once and shared across threads by the pipeline evaluator.
#[test]
fn expression_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Expression>();
    assert_send_sync::<Value>();
    assert_send_sync::<ExprError>();
}

/// matches_spec.rb / not_matches_spec.rb `#evaluate` rows, through expressions.
#[test]
fn matches_lexeme_table() {
    let multi_ok = "My awesome contents\n\nMy-text-string!\n";
    let multi_no = "My awesome contents\n\nMy-terrible-string!\n";
    let vars = HashMap::from([
        ("MULTI_OK".to_owned(), multi_ok.to_owned()),
        ("MULTI_NO".to_owned(), multi_no.to_owned()),
        ("EMPTY".to_owned(), String::new()),
        ("AWESOME".to_owned(), "My AWESOME content\n".to_owned()),
    ]);
    let table = [
        (r#""my-string" =~ /something/"#, false),
        (r#""my-awesome-string" =~ /awesome.string$/"#, true),
        ("null =~ /pattern/", false),
        (r#""my-awesome-string" =~ null"#, false),
        ("null =~ null", false),
        ("$EMPTY =~ /pattern/", false),
        ("$MULTI_OK =~ /text-string/", true),
        ("$MULTI_NO =~ /text-string/", false),
        ("$AWESOME =~ /awesome/i", true),
        ("$AWESOME =~ /terrible/i", false),
        (r#""abcde" =~ "/^ab.*/""#, true),
        (r#""dfg" =~ "/^ab.*/""#, false),
    ];
    for (src, want) in table {
        assert_eq!(parse(src).is_truthy(&vars), want, "{src}");
        let negated = src.replacen("=~", "!~", 1);
        assert_eq!(parse(&negated).is_truthy(&vars), !want, "{negated}");
    }
}

/// parser_spec.rb `#tree`: GitLab's `inspect` of each parse tree.
#[test]
fn parser_tree_table() {
    let table = [
        (r#"$VAR1 == "123""#, r#"equals($VAR1, "123")"#),
        (
            r#"$VAR1 == "123" == $VAR2"#,
            r#"equals(equals($VAR1, "123"), $VAR2)"#,
        ),
        ("$VAR", "$VAR"),
        (r#""some value""#, r#""some value""#),
        ("null", "null"),
        ("$VAR1 || $VAR2 && $VAR3", "or($VAR1, and($VAR2, $VAR3))"),
        ("$VAR1 && $VAR2 || $VAR3", "or(and($VAR1, $VAR2), $VAR3)"),
        (
            "$VAR1 && $VAR2 || $VAR3 && $VAR4",
            "or(and($VAR1, $VAR2), and($VAR3, $VAR4))",
        ),
        (
            "$VAR1 && ($VAR2 || $VAR3) && $VAR4",
            "and(and($VAR1, or($VAR2, $VAR3)), $VAR4)",
        ),
        (
            r#"$VAR1 == "a" || $VAR2 == "b" && $VAR3 == "c" || $VAR4 == "d" && $VAR5 == "e""#,
            r#"or(or(equals($VAR1, "a"), and(equals($VAR2, "b"), equals($VAR3, "c"))), and(equals($VAR4, "d"), equals($VAR5, "e")))"#,
        ),
        (
            r#"(($VAR1 == "a" || $VAR2 == "b") && $VAR3 == "c" || $VAR4 == "d") && $VAR5 == "e""#,
            r#"and(or(and(or(equals($VAR1, "a"), equals($VAR2, "b")), equals($VAR3, "c")), equals($VAR4, "d")), equals($VAR5, "e"))"#,
        ),
        // Comparisons share one precedence and are left-associative.
        ("$A =~ /ab/ != $B", "not_equals(matches($A, /ab/), $B)"),
    ];
    for (src, want) in table {
        assert_eq!(parse(src).inspect(), want, "{src}");
    }
}

/// parser_spec.rb error cases, and the other syntax errors GitLab raises.
#[test]
fn parser_errors() {
    use ExprError::*;
    type Check = fn(&ExprError) -> bool;
    let cases: &[(&str, Check)] = &[
        // "when expression is empty": StatementError / 'Empty parse tree'.
        ("", |e| *e == Empty),
        ("  \t\n", |e| *e == Empty),
        ("()", |e| *e == Empty),
        // "when two value tokens have no operator": 'Unreachable nodes in parse tree'.
        (r#"$VAR "text""#, |e| *e == UnexpectedValue { offset: 5 }),
        ("$A ($B)", |e| *e == UnexpectedValue { offset: 4 }),
        // "when an operator has no left side" / "no right side": OperatorError.
        (r#"== "123""#, |e| {
            matches!(
                e,
                MissingOperand {
                    offset: 0,
                    side: "left",
                    ..
                }
            )
        }),
        ("$VAR ==", |e| {
            matches!(
                e,
                MissingOperand {
                    offset: 5,
                    side: "right",
                    ..
                }
            )
        }),
        ("$A == $B &&", |e| {
            matches!(
                e,
                MissingOperand {
                    offset: 9,
                    op: "&&",
                    ..
                }
            )
        }),
        ("&&", |e| {
            matches!(
                e,
                MissingOperand {
                    side: "left or right",
                    ..
                }
            )
        }),
        // "when parenthesis are unmatched".
        ("$VAR == (", |e| *e == UnclosedParenthesis { offset: 8 }),
        (r#"$VAR2 == ("aa""#, |e| *e == UnclosedParenthesis { offset: 9 }),
        (r#"$VAR2 == ("aa"))"#, |e| {
            *e == UnmatchedParenthesis { offset: 15 }
        }),
        (r#"$VAR2 == "aa")"#, |e| *e == UnmatchedParenthesis { offset: 13 }),
        (r#"(($VAR2 == "aa")"#, |e| *e == UnclosedParenthesis { offset: 0 }),
        (r#"($VAR2 == "aa"))"#, |e| {
            *e == UnmatchedParenthesis { offset: 15 }
        }),
        (")", |e| *e == UnmatchedParenthesis { offset: 0 }),
        // Lexer::SyntaxError 'Unknown lexeme found!' (lexer_spec: '$V1 123 $V2').
        ("$V1 123 $V2", |e| matches!(e, UnknownLexeme { offset: 4, .. })),
        ("${VAR}", |e| matches!(e, UnknownLexeme { offset: 0, .. })),
        ("$", |e| matches!(e, UnknownLexeme { offset: 0, .. })),
        ("$A = $B", |e| matches!(e, UnknownLexeme { offset: 3, .. })),
        ("$A == True", |e| matches!(e, UnknownLexeme { offset: 6, .. })),
        ("$A & $B", |e| matches!(e, UnknownLexeme { offset: 3, .. })),
        ("!$A", |e| matches!(e, UnknownLexeme { offset: 0, .. })),
        (r#""unterminated"#, |e| {
            matches!(e, UnknownLexeme { offset: 0, .. })
        }),
        ("\"two\nlines\"", |e| matches!(e, UnknownLexeme { offset: 0, .. })),
        ("$VÄR", |e| matches!(e, UnknownLexeme { offset: 2, .. })),
        ("nullx", |e| matches!(e, UnknownLexeme { offset: 4, .. })),
        // pattern_spec.rb: `//` is no pattern; one character is not enough either.
        ("$A =~ //", |e| matches!(e, UnknownLexeme { offset: 6, .. })),
        ("$A =~ /a/", |e| matches!(e, UnknownLexeme { offset: 6, .. })),
        // pattern_spec.rb "ignores unsupported flags": `x` is left over.
        ("$A =~ /ab/x", |e| matches!(e, UnknownLexeme { offset: 10, .. })),
        // The closing slash may not follow a backslash.
        (r"$A =~ /ab\\/", |e| matches!(e, UnknownLexeme { offset: 6, .. })),
        // pattern_spec.rb '.build raises an error if pattern is invalid'.
        ("$A =~ / some ( thin/i", |e| {
            matches!(e, InvalidRegex { offset: 6, .. })
        }),
        ("$A =~ /(a)\\1/", |e| matches!(e, InvalidRegex { offset: 6, .. })),
        // Statement#valid? evaluates once: UntrustedRegexp#== raises on a non-pattern.
        (r#"/ab/ == "ab""#, |e| {
            matches!(e, Evaluation(EvalError::PatternComparison { offset: 5 }))
        }),
        // ... and `=~` against `true` (nil == nil) raises NoMethodError on `gsub`.
        ("$A =~ ($B == $C)", |e| {
            matches!(e, Evaluation(EvalError::BooleanPattern { offset: 3, .. }))
        }),
    ];
    for (src, check) in cases {
        match Expression::parse(src) {
            Ok(e) => panic!("`{src}` should not parse, got {}", e.inspect()),
            Err(e) => assert!(check(&e), "`{src}`: unexpected error {e:?}"),
        }
    }
}

/// GitLab's shunting-yard never checks operator positions; these parse in GitLab.
#[test]
fn parser_accepts_what_gitlab_accepts() {
    assert_eq!(parse("$A $B ==").inspect(), "equals($A, $B)");
    assert_eq!(parse("== $A $B").inspect(), "equals($A, $B)");
    assert_eq!(parse("$A (== $B)").inspect(), "equals($A, $B)");
    assert_eq!(
        parse("$A == /ab/ || null").inspect(),
        "or(equals($A, /ab/), null)"
    );
}

/// lexer_spec.rb: `MAX_TOKENS = 100` iterations, so 99 tokens pass and 100 do not
/// ('limits statement to specified amount of tokens').
#[test]
fn token_limit() {
    let expr = |n_vars: usize| {
        (0..n_vars)
            .map(|i| format!("$V{i}"))
            .collect::<Vec<_>>()
            .join(" && ")
    };
    // 50 variables and 49 operators: 99 tokens.
    assert!(Expression::parse(&expr(50)).is_ok());
    // 99 tokens then trailing whitespace is still fine.
    assert!(Expression::parse(&format!("{} ", expr(50))).is_ok());
    // 100 tokens: 'Too many tokens!' even though the input ends there.
    let hundred = format!("({})", expr(49)); // 49 + 48 + 2 = 99
    assert!(Expression::parse(&hundred).is_ok());
    let too_many = format!("(({}))", expr(49)); // 101
    assert!(matches!(
        Expression::parse(&too_many),
        Err(ExprError::TooManyTokens { max: 99, .. })
    ));
    let exactly_100 = format!("{} && $X $Y ==", expr(48)); // 95 + 1 + 3 = 99
    assert!(Expression::parse(&exactly_100).is_ok());
    let exactly_100 = format!("{} && $X $Y $Z == ==", expr(48)); // 95 + 1 + 5 = 101
    assert!(matches!(
        Expression::parse(&exactly_100),
        Err(ExprError::TooManyTokens { .. })
    ));
    let tokens_100 = format!("{} $Z", expr(50)); // 100 tokens
    assert!(matches!(
        Expression::parse(&tokens_100),
        Err(ExprError::TooManyTokens { .. })
    ));
}

fn token_texts(src: &str) -> Vec<String> {
    match tokenize(src) {
        Ok(tokens) => tokens
            .iter()
            .map(|t| match &t.kind {
                TokKind::LParen => "(".to_owned(),
                TokKind::RParen => ")".to_owned(),
                TokKind::Variable(n) => format!("${n}"),
                TokKind::Str(v, q) => format!("{q}{v}{q}"),
                TokKind::Pattern(raw) => raw.clone(),
                TokKind::Null => "null".to_owned(),
                TokKind::Bool(b) => b.to_string(),
                TokKind::Op(op) => op.as_str().to_owned(),
            })
            .collect(),
        Err(e) => panic!("`{src}` should lex: {e}"),
    }
}

/// lexer_spec.rb `#tokens`, including the complex-expression tables.
#[test]
fn lexer_tables() {
    assert_eq!(token_texts("$VARIABLE"), ["$VARIABLE"]);
    assert_eq!(token_texts("\t$VARIABLE "), ["$VARIABLE"]);
    assert_eq!(token_texts("$VARIABLE1 $VARIABLE2"), ["$VARIABLE1", "$VARIABLE2"]);
    assert_eq!(
        token_texts(r#"$VARIABLE "text" "value""#),
        ["$VARIABLE", r#""text""#, r#""value""#]
    );
    assert_eq!(
        token_texts(r#"$VARIABLE == "text""#),
        ["$VARIABLE", "==", r#""text""#]
    );
    let table: &[(&str, &[&str])] = &[
        (
            "$PRESENT_VARIABLE =~ /my var/ && $EMPTY_VARIABLE =~ /nope/",
            &[
                "$PRESENT_VARIABLE",
                "=~",
                "/my var/",
                "&&",
                "$EMPTY_VARIABLE",
                "=~",
                "/nope/",
            ],
        ),
        (
            r#"$EMPTY_VARIABLE == "" && $PRESENT_VARIABLE"#,
            &["$EMPTY_VARIABLE", "==", r#""""#, "&&", "$PRESENT_VARIABLE"],
        ),
        (
            r#"$EMPTY_VARIABLE == "" && $PRESENT_VARIABLE != "nope""#,
            &[
                "$EMPTY_VARIABLE",
                "==",
                r#""""#,
                "&&",
                "$PRESENT_VARIABLE",
                "!=",
                r#""nope""#,
            ],
        ),
        (
            "$PRESENT_VARIABLE && $EMPTY_VARIABLE",
            &["$PRESENT_VARIABLE", "&&", "$EMPTY_VARIABLE"],
        ),
        (
            "$PRESENT_VARIABLE =~ /my var/ || $EMPTY_VARIABLE =~ /nope/",
            &[
                "$PRESENT_VARIABLE",
                "=~",
                "/my var/",
                "||",
                "$EMPTY_VARIABLE",
                "=~",
                "/nope/",
            ],
        ),
        (
            r#"$EMPTY_VARIABLE == "" || $PRESENT_VARIABLE"#,
            &["$EMPTY_VARIABLE", "==", r#""""#, "||", "$PRESENT_VARIABLE"],
        ),
        (
            "$PRESENT_VARIABLE || $EMPTY_VARIABLE",
            &["$PRESENT_VARIABLE", "||", "$EMPTY_VARIABLE"],
        ),
        (
            r#"$PRESENT_VARIABLE && null || $EMPTY_VARIABLE == """#,
            &[
                "$PRESENT_VARIABLE",
                "&&",
                "null",
                "||",
                "$EMPTY_VARIABLE",
                "==",
                r#""""#,
            ],
        ),
        (
            "($PRESENT_VARIABLE =~ /my var/) && $EMPTY_VARIABLE =~ /nope/",
            &[
                "(",
                "$PRESENT_VARIABLE",
                "=~",
                "/my var/",
                ")",
                "&&",
                "$EMPTY_VARIABLE",
                "=~",
                "/nope/",
            ],
        ),
        (
            r#"($PRESENT_VARIABLE && (null || $EMPTY_VARIABLE == ""))"#,
            &[
                "(",
                "$PRESENT_VARIABLE",
                "&&",
                "(",
                "null",
                "||",
                "$EMPTY_VARIABLE",
                "==",
                r#""""#,
                ")",
                ")",
            ],
        ),
        // No spaces are needed between tokens.
        (
            r#"$A=="x"&&($B!~/ab/||null)"#,
            &[
                "$A", "==", r#""x""#, "&&", "(", "$B", "!~", "/ab/", "||", "null", ")",
            ],
        ),
    ];
    for (src, want) in table {
        assert_eq!(token_texts(src), *want, "{src}");
    }
}

/// string_spec.rb `.scan`: lazy to the first matching quote, the other quote allowed
/// inside, empty strings allowed, no escapes.
#[test]
fn string_lexeme() {
    let value = |src: &str| match parse(src).root() {
        Node::String { value, .. } => value.clone(),
        other => panic!("{src}: not a string: {other:?}"),
    };
    assert_eq!(value(r#""some string""#), "some string");
    assert_eq!(value("'some string 2'"), "some string 2");
    assert_eq!(token_texts(r#""some string" "and another one""#).len(), 2);
    assert_eq!(token_texts("'some string' 'and another one'").len(), 2);
    assert_eq!(value(r#""some ' string""#), "some ' string");
    assert_eq!(value(r#"'some " string'"#), r#"some " string"#);
    assert_eq!(value("''"), "");
    assert_eq!(value(r#""""#), "");
    // A backslash is an ordinary character: `"a\"` is the string `a\`.
    assert_eq!(value(r#""a\""#), r"a\");
}

/// variable_spec.rb / Variable::PATTERN `\$(?<name>\w+)`: ASCII word characters only.
#[test]
fn variable_lexeme() {
    assert_eq!(token_texts("$lower_case_9"), ["$lower_case_9"]);
    assert_eq!(token_texts("$9"), ["$9"]);
    assert!(matches!(
        tokenize("$A.B"),
        Err(ExprError::UnknownLexeme { offset: 2, .. })
    ));
    assert!(matches!(
        tokenize("$-A"),
        Err(ExprError::UnknownLexeme { offset: 0, .. })
    ));
}

/// pattern_spec.rb `.scan`: eager boundaries, `\/` escapes the delimiter, `\$` stays.
#[test]
fn pattern_lexeme() {
    let source = |src: &str| match parse(src).root() {
        Node::Pattern { regex, .. } => regex.source().to_owned(),
        other => panic!("{src}: not a pattern: {other:?}"),
    };
    assert_eq!(source("/pattern/"), "pattern");
    assert_eq!(source("/pattern/i"), "(?i)pattern");
    assert_eq!(source("/pattern/im"), "(?im)pattern");
    assert_eq!(source(r"/some .* \/ pattern/"), "some .* / pattern");
    assert_eq!(source(r"/some numeric \/$ pattern/"), "some numeric /$ pattern");
    assert_eq!(source(r"/some numeric \$ pattern/"), r"some numeric \$ pattern");
    assert_eq!(source("/.*/"), ".*");
    // "is an eager scanner for regexp boundaries": `/some .* / pattern/` stops at the
    // first unescaped slash, leaving ` pattern/` (an unknown lexeme).
    assert_eq!(token_texts("/some .* / == /b c/")[0], "/some .* /");
    assert!(matches!(
        Expression::parse("/some .* / pattern/"),
        Err(ExprError::UnknownLexeme { offset: 11, .. })
    ));
    // `[^\\]` may itself be the slash: `/ab//` is the pattern `ab/`.
    assert_eq!(source("/ab//"), "ab/");
    // Patterns alone are truthy (an UntrustedRegexp is `present?`).
    assert!(parse("/ab/").is_truthy(&NoVariables));
    assert!(matches!(parse("/ab/i").evaluate(&NoVariables), Value::Regexp(r) if r.source() == "(?i)ab"));
}

/// null_spec.rb: `null` evaluates to nil, which is not present.
#[test]
fn null_lexeme() {
    assert_eq!(parse("null").evaluate(&NoVariables), Value::Null);
    assert!(!parse("null").is_truthy(&NoVariables));
    assert_eq!(token_texts("null==$A"), ["null", "==", "$A"]);
}

/// equals_spec.rb / not_equals_spec.rb: Ruby `==` on strings and nil; patterns compare
/// by RE2 source.
#[test]
fn equality_semantics() {
    let vars = HashMap::from([("A".to_owned(), "x".to_owned())]);
    assert_eq!(parse(r#"$A == "x""#).evaluate(&vars), T);
    assert_eq!(parse(r#"$A == 'x'"#).evaluate(&vars), T);
    assert_eq!(parse(r#"$A == "X""#).evaluate(&vars), F);
    assert_eq!(parse("$B == null").evaluate(&vars), T);
    assert_eq!(parse(r#"$B == """#).evaluate(&vars), F);
    assert_eq!(parse("/ab/ == /ab/").evaluate(&vars), T);
    assert_eq!(parse("/ab/ == /ab/i").evaluate(&vars), F);
    assert_eq!(parse("/ab/ != /ab/i").evaluate(&vars), T);
    // String == pattern is false (String#== with a non-string), not an error.
    assert_eq!(parse(r#""ab" == /ab/"#).evaluate(&vars), F);
    assert_eq!(parse("null == /ab/").evaluate(&vars), F);
    // Booleans compare too.
    assert_eq!(parse(r#"($A == "x") == ($B == null)"#).evaluate(&vars), T);
}

/// `truthful?` uses ActiveSupport `present?`: whitespace-only strings are blank.
#[test]
fn truthiness_is_present() {
    let vars = HashMap::from([
        ("SPACES".to_owned(), " \t\n".to_owned()),
        ("NBSP".to_owned(), "\u{3000}".to_owned()),
        ("ZERO".to_owned(), "0".to_owned()),
        ("FALSE".to_owned(), "false".to_owned()),
    ]);
    assert!(!parse("$SPACES").is_truthy(&vars));
    assert!(!parse("$NBSP").is_truthy(&vars));
    assert!(parse("$ZERO").is_truthy(&vars));
    assert!(parse("$FALSE").is_truthy(&vars));
    // but `&&` uses Ruby truthiness, where "  " is true.
    assert_eq!(parse(r#"$SPACES && "y""#).evaluate(&vars), s("y"));
}

/// Evaluations that raise in GitLab at run time count as false.
#[test]
fn runtime_errors_are_false() {
    let vars = HashMap::from([("A".to_owned(), "x".to_owned())]);
    // Valid: with no variables `$A && /ab/` is nil, and nil == "ab" is false.
    let e = parse(r#"($A && /ab/) == "ab""#);
    assert_eq!(
        e.try_evaluate(&vars),
        Err(EvalError::PatternComparison { offset: 13 })
    );
    assert!(!e.is_truthy(&vars));
    assert_eq!(e.evaluate(&vars), Value::Null);
    // `$A =~ ($B != $C)`: false with no variables, `true.gsub` when B and C differ.
    let e = parse("$A =~ ($B != $C)");
    let vars = HashMap::from([("B".to_owned(), "1".to_owned())]);
    assert!(matches!(
        e.try_evaluate(&vars),
        Err(EvalError::BooleanPattern { .. })
    ));
    assert!(!e.is_truthy(&vars));
}

#[test]
fn variable_names_in_order_without_duplicates() {
    let e = parse(r#"$B == "x" || ($A =~ $B && $C) || null"#);
    assert_eq!(e.variable_names(), ["B", "A", "C"]);
    assert_eq!(e.source(), r#"$B == "x" || ($A =~ $B && $C) || null"#);
    assert!(parse(r#""x""#).variable_names().is_empty());
}

#[test]
fn variables_impls() {
    let src = r#"$A == "1" && $B == null"#;
    let e = parse(src);
    let hm = HashMap::from([("A".to_owned(), "1".to_owned())]);
    let bt = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
    let im = indexmap::IndexMap::<String, String>::from_iter([("A".to_owned(), "1".to_owned())]);
    let store = [("A", "1")];
    let f = FnVariables::new(|name: &str| store.iter().find(|(k, _)| *k == name).map(|(_, v)| *v));
    assert!(e.is_truthy(&hm));
    assert!(e.is_truthy(&bt));
    assert!(e.is_truthy(&im));
    assert!(e.is_truthy(&f));
    assert!(e.is_truthy(&&hm));
    assert!(!e.is_truthy(&NoVariables));
}

/// GitLab's validation messages: `"#{location} #{attribute} #{message}".downcase`.
#[test]
fn validation_messages() {
    assert_eq!(
        rules_if_error("jobs:build:rules:rule"),
        "jobs:build:rules:rule if invalid expression syntax"
    );
    assert_eq!(
        rules_if_error("workflow:rules:rule"),
        "workflow:rules:rule if invalid expression syntax"
    );
    // spec/lib/gitlab/ci/yaml_processor_spec.rb: only: { variables: ['== null'] }.
    assert!(Expression::parse("== null").is_err());
    assert_eq!(
        policy_variables_error("jobs:rspec:only"),
        "jobs:rspec:only variables invalid expression syntax"
    );
}

#[test]
fn error_messages_are_actionable() {
    let msg = |src: &str| match Expression::parse(src) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{src} parsed"),
    };
    assert!(msg("${VAR} == 'x'").contains("write $VAR, not ${VAR}"));
    assert!(msg("$A ==").contains("no right operand"));
    assert!(msg("$A =~ /(ab/").contains("invalid regular expression at byte 6"));
    assert_eq!(ExprError::UnmatchedParenthesis { offset: 3 }.offset(), 3);
}

#[test]
fn serde_as_source_text() {
    let e = parse(r#"$A == "x" || $B =~ /ab/i"#);
    let json = serde_json::to_string(&e).unwrap_or_default();
    assert_eq!(json, r#""$A == \"x\" || $B =~ /ab/i""#);
    let back: Result<Expression, _> = serde_json::from_str(&json);
    assert!(back.is_ok_and(|b| b == e && b.source() == e.source()));
    let bad: Result<Expression, _> = serde_json::from_str(r#""${A} == 'x'""#);
    assert!(bad.is_err_and(|err| err.to_string().contains("write $VAR")));
}

/// Every kind of error, rendered as a user sees it (snapshot).
#[test]
fn error_rendering_snapshot() {
    let cases = [
        "",
        "$CI_COMMIT_BRANCH == ${DEFAULT_BRANCH}",
        "$A == 'x' &&",
        "== $A",
        "$A $B",
        "($A == 'x'",
        "$A == 'x')",
        "$A =~ /(unclosed/",
        "$A =~ /release-.*/x",
        "$A =~ /a/",
        "$A == True",
        "$A = 'x'",
        "$A & $B",
        "$DEPLOY-ENV == 'x'",
        "'it\\'s'",
        "/ab/ == 'ab'",
        "$A =~ ($B == $C)",
        "$A == \"multi\nline\" && $B == 'ü' && $C = 1",
        &vec!["$V"; 100].join(" || "),
    ];
    let rendered: Vec<String> = cases
        .iter()
        .map(|src| match Expression::parse(src) {
            Ok(e) => format!("{src:?} parsed as {}", e.inspect()),
            Err(e) => format!("{src:?}\n{}", e.render(src)),
        })
        .collect();
    insta::assert_snapshot!(rendered.join("\n\n"));
}

#[test]
fn display_prints_minimal_parentheses() {
    for (src, printed) in [
        ("$A==\"x\"", r#"$A == "x""#),
        ("($A && $B) || $C", "$A && $B || $C"),
        ("$A && ($B || $C)", "$A && ($B || $C)"),
        ("($A == $B) == $C", "$A == $B == $C"),
        ("$A == ($B == $C)", "$A == ($B == $C)"),
        ("$A $B ==", "$A == $B"),
        ("'it''s'", "'it'"),
    ] {
        if let Ok(e) = Expression::parse(src) {
            assert_eq!(e.to_string(), printed, "{src}");
            assert_eq!(parse(&e.to_string()), e, "{src}");
        } else {
            assert_eq!(src, "'it''s'", "only the last case is invalid");
        }
    }
}

// ---- property tests ----------------------------------------------------------------

/// Text built from the language's own pieces, so that many samples parse.
fn expression_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("$A".to_owned()),
        Just("$B_1".to_owned()),
        Just("\"x\"".to_owned()),
        Just("''".to_owned()),
        Just("/a.c/i".to_owned()),
        Just("/a\\/b/".to_owned()),
        Just("null".to_owned()),
        Just("==".to_owned()),
        Just("!=".to_owned()),
        Just("=~".to_owned()),
        Just("!~".to_owned()),
        Just("&&".to_owned()),
        Just("||".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just(" ".to_owned()),
        "[ -~]{0,3}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

fn arb_leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_]{1,6}".prop_map(|n| format!("${n}")),
        "[^\"\n]{0,6}".prop_map(|v| format!("\"{v}\"")),
        "[^'\n]{0,6}".prop_map(|v| format!("'{v}'")),
        Just("null".to_owned()),
        prop_oneof![
            Just("/ab/"),
            Just("/^v\\d+$/i"),
            Just("/a\\/b/m"),
            Just("/[[:alpha:]]+/s"),
            Just("/x{2}/U")
        ]
        .prop_map(str::to_owned),
    ]
}

/// Source text of an arbitrary tree, fully parenthesized.
fn arb_tree_source() -> impl Strategy<Value = String> {
    arb_leaf().prop_recursive(5, 24, 2, |inner| {
        (
            inner.clone(),
            prop_oneof![Just("=="), Just("!="), Just("&&"), Just("||")],
            inner,
        )
            .prop_map(|(l, op, r)| format!("({l} {op} {r})"))
    })
}

fn arb_vars() -> impl Strategy<Value = HashMap<String, String>> {
    prop::collection::hash_map(
        prop_oneof![Just("A".to_owned()), Just("B_1".to_owned()), "[A-Za-z0-9_]{1,6}"],
        prop_oneof![
            ".{0,8}",
            Just("/a.c/i".to_owned()),
            Just("/(bad/".to_owned()),
            Just(String::new())
        ],
        0..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Parsing never panics, on any string.
    #[test]
    fn parse_never_panics(src in ".{0,64}") {
        let _ = Expression::parse(&src);
    }

    #[test]
    fn parse_never_panics_on_expression_like_text(
        src in prop_oneof![
            expression_like(),
            arb_tree_source(),
            // Without its parentheses a tree is still valid, grouped by precedence.
            arb_tree_source().prop_map(|s| s.replace(['(', ')'], "")),
        ],
        vars in arb_vars(),
    ) {
        if let Ok(e) = Expression::parse(&src) {
            // Evaluation never panics, and is_truthy agrees with the value's present?.
            let v = e.try_evaluate(&vars);
            prop_assert_eq!(e.is_truthy(&vars), v.is_ok_and(|v| v.is_present()));
            // Printing then re-parsing is stable. GitLab's parser accepts postfix forms
            // (`$A $B ==`) whose printout needs more tokens than the 99 allowed.
            match Expression::parse(&e.to_string()) {
                Ok(again) => {
                    prop_assert_eq!(&again, &e);
                    prop_assert_eq!(again.to_string(), e.to_string());
                }
                Err(err) => prop_assert!(matches!(err, ExprError::TooManyTokens { .. }), "{}", err),
            }
        }
    }

    /// The RE2 translation never panics, whatever the pattern text.
    #[test]
    fn regex_translation_never_panics(body in r"[\\(){}\[\]^$|*+?.:=!<>PpQEx0-9a-z,&~-]{0,16}", flags in "[ismU]{0,3}") {
        let _ = super::re2::fabricate(&format!("/{body}/{flags}"));
    }

    /// Any tree built from the grammar prints and re-parses to the same tree, and
    /// evaluates to the same value either way.
    #[test]
    fn print_reparse_roundtrip(src in arb_tree_source(), vars in arb_vars()) {
        let Ok(e) = Expression::parse(&src) else {
            // Only evaluation-time rejections are possible for such trees.
            let err = Expression::parse(&src).err();
            prop_assert!(matches!(err, Some(ExprError::Evaluation(_)) | Some(ExprError::TooManyTokens { .. })), "{:?}", err);
            return Ok(());
        };
        let again = Expression::parse(&e.to_string());
        prop_assert!(again.is_ok(), "{} -> {}: {:?}", src, e, again.err());
        if let Ok(again) = again {
            prop_assert_eq!(&again, &e);
            // Error offsets move when the text is reprinted; values must not.
            prop_assert_eq!(again.try_evaluate(&vars).ok(), e.try_evaluate(&vars).ok());
        }
    }
}

/// GitLab's newer lexer has `Lexeme::Boolean`; variables are strings, so `$A == true` is
/// false even when `A` is "true", and `true` alone is truthy.
#[test]
fn boolean_literals() {
    let vars: std::collections::HashMap<String, String> = [("A".to_string(), "true".to_string())].into();
    let e = Expression::parse("$A == true").unwrap_or_else(|e| panic!("{e}"));
    assert!(!e.is_truthy(&vars));
    assert!(
        Expression::parse("true")
            .unwrap_or_else(|e| panic!("{e}"))
            .is_truthy(&vars)
    );
    assert!(
        !Expression::parse("false || null")
            .unwrap_or_else(|e| panic!("{e}"))
            .is_truthy(&vars)
    );
    assert!(Expression::parse("$A == truely").is_err());
}
