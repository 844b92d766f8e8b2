//! Vendors: the companies whose products are tried.

use serde::Serialize;

use super::{Invalid, parse_text};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct VendorName(String);

impl VendorName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let name = parse_text("name", raw, 100, false)?;
        if name.is_empty() {
            return Err(Invalid::new("name", "must not be empty"));
        }
        Ok(VendorName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_required() {
        assert_eq!(VendorName::parse(" Acme ").unwrap().as_str(), "Acme");
        assert!(VendorName::parse("   ").is_err());
        assert!(VendorName::parse("a\u{1b}[31m").is_err());
    }
}
