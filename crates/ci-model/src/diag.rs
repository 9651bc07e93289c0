//! Diagnostics: GitLab's message text plus where it applies.

use std::fmt;

use serde::Serialize;

use crate::yaml::{SourceMap, Span};

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// GitLab would refuse the pipeline.
    Error,
    /// GitLab would accept it but warn.
    Warning,
}

/// One message about the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The text, exactly as GitLab words it.
    pub message: String,
    /// Where it applies, when known.
    pub span: Option<Span>,
}

impl Diagnostic {
    /// An error.
    pub fn error(message: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span,
        }
    }

    /// A warning.
    pub fn warning(message: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            message: message.into(),
            span,
        }
    }

    /// `FILE:LINE:COL: message` (or `FILE: message` without a position).
    pub fn display<'a>(&'a self, sources: &'a SourceMap) -> impl fmt::Display + 'a {
        DisplayDiag { d: self, sources }
    }
}

struct DisplayDiag<'a> {
    d: &'a Diagnostic,
    sources: &'a SourceMap,
}

impl fmt::Display for DisplayDiag<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.d.span {
            Some(s) if s.line > 0 => write!(
                f,
                "{}:{}:{}: {}",
                self.sources.name(s.file),
                s.line,
                s.col,
                self.d.message
            ),
            Some(s) => write!(f, "{}: {}", self.sources.name(s.file), self.d.message),
            None => write!(f, "{}: {}", self.sources.name(0), self.d.message),
        }
    }
}
