//! Job artifacts as GitLab stores them: one upload per `artifact_type`, the pairs of type
//! and format GitLab accepts (`Enums::Ci::JobArtifact.type_and_format_pairs`), and
//! `reports:dotenv` parsed the way `Ci::ParseDotenvArtifactService` does, so that the
//! variables reach the jobs that depend on the uploader.
//!
//! The messages are GitLab's own (what `POST /jobs/:id/artifacts` answers in
//! `{"message": ...}`), since a runner shows them in the job's trace.

use std::io::Read;

/// GitLab's default plan limit `dotenv_variables`.
pub const DOTENV_MAX_VARIABLES: usize = 20;
/// GitLab's default plan limit `dotenv_size` (bytes of the uploaded, compressed file).
pub const DOTENV_MAX_SIZE: usize = 5 * 1024;
/// The longest variable key GitLab stores.
const MAX_KEY_LENGTH: usize = 255;

/// One stored upload.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Upload {
    /// `artifact_type` (`archive`, `junit`, `dotenv`, ...).
    pub artifact_type: String,
    /// `artifact_format` (`zip`, `gzip`, `raw`).
    pub artifact_format: String,
    /// `expire_in` as sent, if any.
    pub expire_in: Option<String>,
    /// The multipart file name.
    pub filename: String,
    /// Size of the stored file.
    pub size: usize,
    /// The file as uploaded.
    #[serde(skip)]
    pub data: Vec<u8>,
}

/// The format GitLab requires for `artifact_type`; `None` for a type it does not know.
pub fn format_for_type(artifact_type: &str) -> Option<&'static str> {
    Some(match artifact_type {
        "archive" | "lsif" => "zip",
        "trace" => "raw",
        "metadata"
        | "junit"
        | "metrics"
        | "metrics_referee"
        | "network_referee"
        | "dotenv"
        | "cobertura"
        | "jacoco"
        | "cluster_applications"
        | "cyclonedx"
        | "annotations"
        | "repository_xray" => "gzip",
        "sast"
        | "secret_detection"
        | "dependency_scanning"
        | "container_scanning"
        | "cluster_image_scanning"
        | "dast"
        | "license_scanning"
        | "accessibility"
        | "codequality"
        | "performance"
        | "browser_performance"
        | "load_performance"
        | "terraform"
        | "requirements"
        | "requirements_v2"
        | "coverage_fuzzing"
        | "api_fuzzing" => "raw",
        _ => return None,
    })
}

/// Why GitLab refuses an upload: the status and its `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// GitLab's message.
    pub message: String,
}

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal {
        status: 400,
        message: message.into(),
    }
}

/// Checks an upload of `artifact_type`/`artifact_format` against GitLab's pairs.
pub fn check_type_and_format(artifact_type: &str, artifact_format: &str) -> Result<(), Refusal> {
    match format_for_type(artifact_type) {
        // Grape's enum validation of the parameter.
        None => Err(bad_request("artifact_type does not have a valid value")),
        Some(f) if f == artifact_format => Ok(()),
        // `validate_file_format!` on save: a RecordInvalid, answered 400.
        Some(_) => Err(bad_request(
            "Validation failed: Invalid file format with specified file type",
        )),
    }
}

/// The members of a (possibly multi-member) gzip stream, as GitLab's `GzipStream` adapter
/// reads them: GitLab Runner writes one member per file.
pub fn gzip_members(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let mut dec = flate2::bufread::GzDecoder::new(rest);
        let mut member = Vec::new();
        dec.read_to_end(&mut member)
            .map_err(|e| format!("not a gzip stream: {e}"))?;
        let left = dec.into_inner();
        if left.len() == rest.len() {
            break;
        }
        rest = left;
        out.push(member);
    }
    Ok(out)
}

/// Ruby's `String#strip`: whitespace and NUL at both ends.
fn ruby_strip(s: &str) -> &str {
    s.trim_matches(|c: char| matches!(c, '\0' | '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' '))
}

/// Parses a `reports:dotenv` upload (the gzip file as sent) with GitLab's rules: the
/// compressed size below [`DOTENV_MAX_SIZE`]; in each member a UTF-8 BOM dropped, every
/// line `KEY=VALUE` split at the first `=` with both sides stripped (else `Invalid
/// Format`); later keys win; at most [`DOTENV_MAX_VARIABLES`] keys; keys of letters,
/// digits and `_`.
pub fn parse_dotenv(gzip: &[u8]) -> Result<Vec<(String, String)>, Refusal> {
    if gzip.len() >= DOTENV_MAX_SIZE {
        return Err(bad_request(format!(
            "Dotenv Artifact Too Big. Maximum Allowable Size: {DOTENV_MAX_SIZE}"
        )));
    }
    let members = gzip_members(gzip).map_err(bad_request)?;
    let mut vars: Vec<(String, String)> = Vec::new();
    for m in members {
        let text = String::from_utf8_lossy(&m);
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        for line in text.split_inclusive('\n') {
            let line = line.strip_suffix('\n').unwrap_or(line);
            // /^(.*?)=(.*)$/ on one line: the first `=` splits.
            let Some((k, v)) = line.split_once('=') else {
                return Err(bad_request("Invalid Format"));
            };
            let (k, v) = (ruby_strip(k).to_string(), ruby_strip(v).to_string());
            match vars.iter_mut().find(|(ek, _)| *ek == k) {
                Some(slot) => slot.1 = v,
                None => vars.push((k, v)),
            }
        }
    }
    if vars.len() > DOTENV_MAX_VARIABLES {
        return Err(bad_request(format!(
            "Dotenv files cannot have more than {DOTENV_MAX_VARIABLES} variables"
        )));
    }
    for (k, _) in &vars {
        let mut errors = Vec::new();
        if k.is_empty() {
            errors.push("Key can't be blank".to_string());
        }
        if k.chars().count() > MAX_KEY_LENGTH {
            errors.push(format!(
                "Key is too long (maximum is {MAX_KEY_LENGTH} characters)"
            ));
        }
        if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || k.is_empty() {
            errors.push("Key can contain only letters, digits and '_'.".to_string());
        }
        if !errors.is_empty() {
            return Err(bad_request(format!("Validation failed: {}", errors.join(", "))));
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(p).unwrap();
            out.extend(e.finish().unwrap());
        }
        out
    }

    #[test]
    fn dotenv_as_gitlab_parses_it() {
        let v = parse_dotenv(&gz(&[b"\xEF\xBB\xBFA=1\r\nB = two words \nA=3\nC=x=y\nD=\n"])).unwrap();
        assert_eq!(
            v,
            [("A", "3"), ("B", "two words"), ("C", "x=y"), ("D", "")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        // GitLab Runner sends one member per file; all of them count.
        let v = parse_dotenv(&gz(&[b"A=1\n", b"B=2"])).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            parse_dotenv(&gz(&[b"A=1\n\nB=2\n"])).unwrap_err().message,
            "Invalid Format"
        );
        assert_eq!(
            parse_dotenv(&gz(&[b"export A=1\n"])).unwrap_err().message,
            "Validation failed: Key can contain only letters, digits and '_'."
        );
        assert_eq!(
            parse_dotenv(&gz(&[b"=1\n"])).unwrap_err().message,
            "Validation failed: Key can't be blank, Key can contain only letters, digits and '_'."
        );
        let many: String = (0..21).map(|i| format!("K{i}=v\n")).collect();
        assert_eq!(
            parse_dotenv(&gz(&[many.as_bytes()])).unwrap_err().message,
            "Dotenv files cannot have more than 20 variables"
        );
        let twenty: String = (0..20).map(|i| format!("K{i}=v\n")).collect();
        assert_eq!(parse_dotenv(&gz(&[twenty.as_bytes()])).unwrap().len(), 20);
        assert_eq!(
            parse_dotenv(b"A=1\n").unwrap_err().status,
            400,
            "a dotenv that is not gzip is refused"
        );
    }

    #[test]
    fn type_and_format_pairs() {
        assert!(check_type_and_format("archive", "zip").is_ok());
        assert!(check_type_and_format("dotenv", "gzip").is_ok());
        assert!(check_type_and_format("junit", "gzip").is_ok());
        assert!(check_type_and_format("codequality", "raw").is_ok());
        assert_eq!(
            check_type_and_format("dotenv", "raw").unwrap_err().message,
            "Validation failed: Invalid file format with specified file type"
        );
        assert_eq!(
            check_type_and_format("nonsense", "zip").unwrap_err().message,
            "artifact_type does not have a valid value"
        );
    }

    proptest::proptest! {
        /// Any text: parsing never panics, and an accepted file holds only valid keys,
        /// each once, with stripped values.
        #[test]
        fn dotenv_parser_total(text in "[A-Za-z0-9_=\\- \\t\\r\\n\\x{feff}é]{0,200}") {
            if let Ok(vars) = parse_dotenv(&gz(&[text.as_bytes()])) {
                proptest::prop_assert!(vars.len() <= DOTENV_MAX_VARIABLES);
                for (i, (k, v)) in vars.iter().enumerate() {
                    proptest::prop_assert!(!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    proptest::prop_assert_eq!(v.as_str(), ruby_strip(v));
                    proptest::prop_assert!(vars[..i].iter().all(|(e, _)| e != k));
                }
            }
        }

        /// Well-formed lines always parse to their last value per key.
        #[test]
        fn dotenv_well_formed(lines in proptest::collection::vec(("[A-Z_][A-Z0-9_]{0,8}", "[a-z0-9 ]{0,10}"), 0..20)) {
            let text: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            let vars = parse_dotenv(&gz(&[text.as_bytes()])).unwrap();
            for (k, v) in &lines {
                let last = lines.iter().rev().find(|(e, _)| e == k).map(|(_, v)| v.trim());
                proptest::prop_assert_eq!(vars.iter().find(|(e, _)| e == k).map(|(_, v)| v.as_str()), last);
                let _ = v;
            }
        }

        /// Arbitrary bytes as an upload never panic.
        #[test]
        fn dotenv_arbitrary_bytes(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_dotenv(&data);
        }
    }
}
