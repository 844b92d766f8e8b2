//! One page of a list: how many items at most, and where the previous page stopped. Lists
//! answer `{"items": [...], "next": …}`; `next` is the link to the following page, `null`
//! on the last one, so a client pages by following it and never builds a cursor itself.

use super::Invalid;

/// How many items a page holds: `?limit=`, 1 to `Limit::MAX`, `Limit::DEFAULT` when absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(u32);

impl Limit {
    pub const DEFAULT: u32 = 100;
    pub const MAX: u32 = 1000;

    pub fn parse(raw: Option<&str>) -> Result<Limit, Invalid> {
        let Some(raw) = raw else {
            return Ok(Limit(Limit::DEFAULT));
        };
        let words = || {
            Invalid::new(
                "limit",
                format!("must be a whole number from 1 to {}", Limit::MAX),
            )
        };
        let n: u32 = raw.trim().parse().map_err(|_| words())?;
        if n == 0 || n > Limit::MAX {
            return Err(words());
        }
        Ok(Limit(n))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// Where a page starts: after the item with this id, in the list's own order. Parsed with the
/// list's id type, so a cursor of another list is refused in words.
pub fn parse_after<Id>(
    raw: Option<&str>,
    parse: impl FnOnce(&str) -> Result<Id, Invalid>,
) -> Result<Option<Id>, Invalid> {
    raw.map(|raw| {
        parse(raw).map_err(|_| {
            Invalid::new(
                "after",
                "is not a position in this list: follow the `next` link of the page before",
            )
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_is_a_whole_number_within_bounds() {
        assert_eq!(Limit::parse(None).unwrap().get(), Limit::DEFAULT);
        assert_eq!(Limit::parse(Some("1")).unwrap().get(), 1);
        assert_eq!(Limit::parse(Some("1000")).unwrap().get(), 1000);
        for bad in ["", "0", "1001", "-1", "ten", "1.5", "99999999999"] {
            let err = Limit::parse(Some(bad)).unwrap_err();
            assert_eq!(err.field, "limit");
            assert!(
                err.reason.contains("whole number from 1 to 1000"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn after_is_refused_in_words() {
        let parse = |s: &str| s.parse::<u8>().map_err(|_| Invalid::new("x", "y"));
        assert_eq!(parse_after(Some("7"), parse).unwrap(), Some(7));
        assert_eq!(parse_after(None, parse).unwrap(), None);
        let err = parse_after(Some("nope"), parse).unwrap_err();
        assert_eq!(err.field, "after");
    }
}
