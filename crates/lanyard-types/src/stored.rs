//! Enums kept in the database as text. A stored value that is none of the known ones means a
//! corrupt row (or a newer version's value): it is an error, never quietly read as a default —
//! reading an unknown connection kind as plain OIDC, say, would skip the Google and Entra checks.

/// A stored text that names no known variant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stored {what} {value:?} is not a known value")]
pub struct UnknownStored {
    /// What the column holds (`"organization status"`).
    pub what: &'static str,
    /// The text found.
    pub value: String,
}

/// Finds the variant of `all` whose stored form (`as_str`) is `text`.
pub fn decode<T: Copy>(
    what: &'static str,
    text: &str,
    all: &[T],
    as_str: impl Fn(T) -> &'static str,
) -> Result<T, UnknownStored> {
    all.iter().copied().find(|v| as_str(*v) == text).ok_or_else(|| UnknownStored { what, value: text.to_owned() })
}

/// Parses a stored value with its strict parser (an id, say); a value it refuses is a corrupt row.
pub fn parse<T, E>(
    what: &'static str,
    text: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, UnknownStored> {
    parse(text).map_err(|_| UnknownStored { what, value: text.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Kind {
        A,
        B,
    }

    fn as_str(k: Kind) -> &'static str {
        match k {
            Kind::A => "a",
            Kind::B => "b",
        }
    }

    #[test]
    fn known_values_decode_and_unknown_ones_are_errors() {
        assert_eq!(decode("kind", "b", &[Kind::A, Kind::B], as_str), Ok(Kind::B));
        let err = decode("kind", "c", &[Kind::A, Kind::B], as_str).unwrap_err();
        assert_eq!(err, UnknownStored { what: "kind", value: "c".into() });
        assert!(decode("kind", "", &[Kind::A, Kind::B], as_str).is_err());
    }

    #[test]
    fn a_value_the_parser_refuses_names_the_column_and_the_text() {
        let err = parse("session id", "not-a-uuid", crate::SessionId::parse).unwrap_err();
        assert_eq!(err, UnknownStored { what: "session id", value: "not-a-uuid".into() });
        let id = crate::SessionId::new();
        assert_eq!(parse("session id", &id.to_string(), crate::SessionId::parse), Ok(id));
    }
}
