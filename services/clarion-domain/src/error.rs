//! User-facing validation errors: every problem names the field it is about so
//! the edge can return gRPC `BadRequest` details or RFC 9457 problem+json.

use std::borrow::Cow;
use std::fmt;

/// How much of a tenant's input an error message quotes: enough to
/// recognize it, never enough to make the error itself a problem (gRPC
/// clients refuse more than 8 KiB of metadata, and errors are logged).
pub const EXCERPT_BYTES: usize = 120;

/// `s` cut to at most `max` bytes (at a character boundary) with "…" added
/// when it was cut.
pub fn excerpt(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("{}…", cut(s, max)))
    }
}

/// A tenant's text quoted in an error: Debug-quoted (control characters
/// escaped) and cut to [`EXCERPT_BYTES`], with its length when it was cut.
pub fn quote(s: &str) -> String {
    if s.len() <= EXCERPT_BYTES {
        format!("{s:?}")
    } else {
        format!("{:?}… ({} bytes)", cut(s, EXCERPT_BYTES), s.len())
    }
}

/// The longest prefix of `s` of at most `max` bytes.
fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One problem with one field of a request or definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field, e.g. `recipients[2].subscriber_id`.
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// All the problems found in one request; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Violations(pub Vec<FieldViolation>);

impl Violations {
    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    pub fn single(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self(vec![FieldViolation::new(field, description)])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was found, the violations otherwise.
    pub fn into_result(self) -> Result<(), Violations> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_bounded_and_cut_at_characters() {
        assert_eq!(excerpt("short", 10), "short");
        let long = "é".repeat(100);
        let cut = excerpt(&long, 11);
        assert_eq!(cut, format!("{}…", "é".repeat(5)));
        let q = quote(&"x".repeat(10_000));
        assert!(q.len() < EXCERPT_BYTES + 40, "{q}");
        assert!(q.ends_with("(10000 bytes)"), "{q}");
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
    }
}
