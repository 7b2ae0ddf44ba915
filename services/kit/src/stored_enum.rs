//! `stored_enum!`: a domain enumeration with its database text, its protobuf counterpart, and
//! the conversions between them, so each service declares its enums in one line per value
//! instead of writing the same three matches again.

/// Declares `enum $name` whose values are stored as the given text and map to variants of
/// the protobuf enum `$proto`. Generates `ALL`, `as_str`, `parse`, `to_proto`,
/// `from_proto` (`None` for values not listed, e.g. UNSPECIFIED) and `Display`.
#[macro_export]
macro_rules! stored_enum {
    ($name:ident, $proto:ty, { $($variant:ident = $text:literal => $pb:ident),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as stored in the database and logs.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }

            pub fn to_proto(self) -> $proto {
                match self { $($name::$variant => <$proto>::$pb),+ }
            }

            /// From the wire value; `None` for numbers not listed (UNSPECIFIED unless it is).
            pub fn from_proto(value: i32) -> Option<Self> {
                match <$proto>::try_from(value).ok()? {
                    $(<$proto>::$pb => Some($name::$variant),)+
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use mesh_proto::registry::SupervisionLevel;

    crate::stored_enum!(Level, SupervisionLevel, {
        Strict = "strict" => Strict,
        Normal = "normal" => Normal,
    });

    #[test]
    fn text_and_wire_values_round_trip() {
        for &level in Level::ALL {
            assert_eq!(Level::parse(level.as_str()), Some(level));
            assert_eq!(Level::from_proto(level.to_proto() as i32), Some(level));
        }
        assert_eq!(Level::Strict.to_string(), "strict");
        assert_eq!(Level::parse("lenient"), None, "not listed");
        assert_eq!(
            Level::from_proto(SupervisionLevel::Lenient as i32),
            None,
            "not listed"
        );
        assert_eq!(Level::from_proto(0), None);
        assert_eq!(Level::from_proto(99), None);
    }
}
