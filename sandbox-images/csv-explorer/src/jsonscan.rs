//! Streaming walk over a JSON document with serde visitors: a top-level
//! array is delivered row by row (objects become rows keyed by column,
//! anything else goes into a `(value)` column) without ever holding the whole
//! document; a top-level object is summarised key by key.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::Read;

use serde::Deserialize as _;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::stats::MAX_COLUMNS;

/// Longest text kept for one cell (bytes); nested values are rendered as
/// compact JSON up to this size.
pub const CELL_CAP: usize = 8 * 1024;
/// Column used for array elements that are not objects.
pub const VALUE_COLUMN: &str = "(value)";
/// Top-level object keys listed in a summary.
pub const MAX_KEYS: usize = 1000;

/// Receives the rows of a top-level JSON array.
pub trait RowSink {
    /// Column index for `key` (and whether it is new), allocating a new
    /// column if there is room.
    fn column(&mut self, key: &str) -> Option<(usize, bool)>;
    /// One element: `cells[i]` is the text of column `i` ("" when absent;
    /// columns past `cells.len()` are absent too). `Err` aborts the scan.
    fn row(&mut self, cells: &[String]) -> Result<(), String>;
}

/// Key → column index, in order of first appearance, capped.
#[derive(Default, Debug)]
pub struct ColumnMap {
    index: HashMap<String, usize>,
    pub names: Vec<String>,
    /// Keys that were dropped because the column cap was reached.
    pub overflow: bool,
}

impl ColumnMap {
    /// Returns `(index, is_new)`.
    pub fn get_or_add(&mut self, key: &str) -> Option<(usize, bool)> {
        if let Some(&i) = self.index.get(key) {
            return Some((i, false));
        }
        if self.names.len() >= MAX_COLUMNS {
            self.overflow = true;
            return None;
        }
        let i = self.names.len();
        self.index.insert(key.to_string(), i);
        self.names.push(key.to_string());
        Some((i, true))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Array {
        len: u64,
        objects: u64,
    },
    Object {
        keys: Vec<(String, String)>,
        total: u64,
    },
    Scalar(String),
}

/// Scans a whole document (trailing garbage is an error).
pub fn scan<R: Read>(reader: R, sink: &mut dyn RowSink) -> Result<Shape, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    let shape = (&mut de).deserialize_any(TopVisitor { sink })?;
    de.end()?;
    Ok(shape)
}

/// Just checks that the document parses.
pub fn validate<R: Read>(reader: R) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    IgnoredAny::deserialize(&mut de)?;
    de.end()
}

struct TopVisitor<'a> {
    sink: &'a mut dyn RowSink,
}

impl<'de> Visitor<'de> for TopVisitor<'_> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let mut cells = Vec::new();
        let (mut len, mut objects) = (0u64, 0u64);
        while let Some(is_object) = seq.next_element_seed(RowSeed {
            sink: &mut *self.sink,
            cells: &mut cells,
        })? {
            len += 1;
            objects += is_object as u64;
        }
        Ok(Shape::Array { len, objects })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let mut keys = Vec::new();
        let mut total = 0u64;
        while let Some(key) = map.next_key::<String>()? {
            let desc = map.next_value_seed(DescribeSeed)?;
            total += 1;
            if keys.len() < MAX_KEYS {
                keys.push((key, desc));
            }
        }
        Ok(Shape::Object { keys, total })
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Shape, E> {
        DescribeVisitor.visit_bool(v).map(Shape::Scalar)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Shape, E> {
        DescribeVisitor.visit_i64(v).map(Shape::Scalar)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Shape, E> {
        DescribeVisitor.visit_u64(v).map(Shape::Scalar)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Shape, E> {
        DescribeVisitor.visit_f64(v).map(Shape::Scalar)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Shape, E> {
        DescribeVisitor.visit_str(v).map(Shape::Scalar)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
        DescribeVisitor.visit_unit().map(Shape::Scalar)
    }
}

/// One array element; yields `true` when it was an object.
struct RowSeed<'a> {
    sink: &'a mut dyn RowSink,
    cells: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl RowSeed<'_> {
    /// Clears the row buffer and returns the cell for the value column.
    fn value_cell(&mut self) -> Option<&mut String> {
        self.cells.iter_mut().for_each(String::clear);
        let (i, _) = self.sink.column(VALUE_COLUMN)?;
        if self.cells.len() <= i {
            self.cells.resize(i + 1, String::new());
        }
        Some(&mut self.cells[i])
    }

    fn emit<E: de::Error>(self) -> Result<bool, E> {
        self.sink.row(self.cells).map_err(E::custom)?;
        Ok(false)
    }
}

macro_rules! scalar_row {
    ($name:ident, $t:ty) => {
        fn $name<E: de::Error>(mut self, v: $t) -> Result<bool, E> {
            if let Some(out) = self.value_cell() {
                TextVisitor { out, nested: false }.$name::<E>(v)?;
            }
            self.emit()
        }
    };
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array element")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        self.cells.iter_mut().for_each(String::clear);
        while let Some(key) = map.next_key::<String>()? {
            match self.sink.column(&key) {
                Some((i, _)) => {
                    if self.cells.len() <= i {
                        self.cells.resize(i + 1, String::new());
                    }
                    let out = &mut self.cells[i];
                    out.clear();
                    map.next_value_seed(TextSeed {
                        out,
                        nested: false,
                        prefix: "",
                    })?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        self.sink.row(self.cells).map_err(de::Error::custom)?;
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, seq: A) -> Result<bool, A::Error> {
        match self.value_cell() {
            Some(out) => TextVisitor { out, nested: false }.visit_seq(seq)?,
            None => IgnoredAny.visit_seq(seq).map(|_| ())?,
        }
        self.emit()
    }

    scalar_row!(visit_bool, bool);
    scalar_row!(visit_i64, i64);
    scalar_row!(visit_u64, u64);
    scalar_row!(visit_f64, f64);
    scalar_row!(visit_str, &str);

    fn visit_unit<E: de::Error>(mut self) -> Result<bool, E> {
        self.value_cell();
        self.emit()
    }
}

/// Appends `s`, cutting (on a char boundary, with an ellipsis) at CELL_CAP.
fn push_capped(out: &mut String, s: &str) {
    let room = CELL_CAP.saturating_sub(out.len());
    if room == 0 {
        return;
    }
    if s.len() <= room {
        out.push_str(s);
    } else {
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        out.push_str(&s[..end]);
        // `end >= room - 3` and '…' is 3 bytes, so `out` is now full and
        // nothing more gets appended.
        out.push('…');
    }
}

fn push_json_str(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(q) => push_capped(out, &q),
        Err(_) => push_capped(out, "\"?\""),
    }
}

/// Renders a value as cell text: scalars plainly, nested values as compact
/// JSON.
struct TextSeed<'a> {
    out: &'a mut String,
    nested: bool,
    prefix: &'static str,
}

impl<'de> DeserializeSeed<'de> for TextSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        push_capped(self.out, self.prefix);
        d.deserialize_any(TextVisitor {
            out: self.out,
            nested: self.nested,
        })
    }
}

struct TextVisitor<'a> {
    out: &'a mut String,
    nested: bool,
}

impl<'de> Visitor<'de> for TextVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        push_capped(self.out, if v { "true" } else { "false" });
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        push_capped(self.out, &v.to_string());
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        push_capped(self.out, &v.to_string());
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        push_capped(self.out, &v.to_string());
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        if self.nested {
            push_json_str(self.out, v);
        } else {
            push_capped(self.out, v);
        }
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        if self.nested {
            push_capped(self.out, "null");
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        push_capped(self.out, "[");
        let mut prefix = "";
        while seq
            .next_element_seed(TextSeed {
                out: &mut *self.out,
                nested: true,
                prefix,
            })?
            .is_some()
        {
            prefix = ",";
        }
        push_capped(self.out, "]");
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        push_capped(self.out, "{");
        let mut first = true;
        while let Some(k) = map.next_key::<String>()? {
            if !first {
                push_capped(self.out, ",");
            }
            first = false;
            push_json_str(self.out, &k);
            push_capped(self.out, ":");
            map.next_value_seed(TextSeed {
                out: &mut *self.out,
                nested: true,
                prefix: "",
            })?;
        }
        push_capped(self.out, "}");
        Ok(())
    }
}

/// Short description of a value ("array of 3", "number 42", …), skipping
/// over nested content without keeping it.
struct DescribeSeed;

impl<'de> DeserializeSeed<'de> for DescribeSeed {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(DescribeVisitor)
    }
}

struct DescribeVisitor;

impl<'de> Visitor<'de> for DescribeVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<String, E> {
        Ok(format!("boolean {v}"))
    }
    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(format!("number {v}"))
    }
    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(format!("number {v}"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<String, E> {
        Ok(format!("number {v}"))
    }
    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        let mut s = String::from("string ");
        let short = crate::stats::truncate_chars(v, 60);
        let _ = write!(s, "{}", serde_json::Value::String(short));
        Ok(s)
    }
    fn visit_unit<E>(self) -> Result<String, E> {
        Ok("null".to_string())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
        let mut n = 0u64;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(format!("array of {n}"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        let mut n = 0u64;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(format!(
            "object with {n} key{}",
            if n == 1 { "" } else { "s" }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        map: ColumnMap,
        rows: Vec<Vec<String>>,
    }

    impl RowSink for Collect {
        fn column(&mut self, key: &str) -> Option<(usize, bool)> {
            self.map.get_or_add(key)
        }
        fn row(&mut self, cells: &[String]) -> Result<(), String> {
            self.rows.push(cells.to_vec());
            if self.rows.len() > 100 {
                Err("stop".into())
            } else {
                Ok(())
            }
        }
    }

    fn run(doc: &str) -> (Result<Shape, serde_json::Error>, Collect) {
        let mut c = Collect::default();
        let r = scan(doc.as_bytes(), &mut c);
        (r, c)
    }

    #[test]
    fn array_of_objects_keeps_key_order() {
        let (shape, c) = run(r#"[{"b":1,"a":"x"},{"a":"y","c":[1,{"k":null}],"b":2.5},{}]"#);
        assert_eq!(shape.unwrap(), Shape::Array { len: 3, objects: 3 });
        assert_eq!(c.map.names, ["b", "a", "c"]);
        assert_eq!(c.rows[0], ["1", "x"]);
        assert_eq!(c.rows[1], ["2.5", "y", r#"[1,{"k":null}]"#]);
        assert!(c.rows[2].iter().all(String::is_empty));
    }

    #[test]
    fn array_of_scalars_uses_value_column() {
        let (shape, c) = run(r#"[1, "two", null, [3], {"k": true}]"#);
        assert_eq!(shape.unwrap(), Shape::Array { len: 5, objects: 1 });
        assert_eq!(c.map.names, [VALUE_COLUMN, "k"]);
        let rows: Vec<_> = c.rows.iter().map(|r| r.join("|")).collect();
        assert_eq!(rows, ["1", "two", "", "[3]", "|true"]);
    }

    #[test]
    fn object_summary() {
        let (shape, c) =
            run(r#"{"name":"demo","items":[1,2,3],"meta":{"a":1,"b":{}},"n":null,"x":1.5}"#);
        assert!(c.rows.is_empty());
        let Shape::Object { keys, total } = shape.unwrap() else {
            panic!()
        };
        assert_eq!(total, 5);
        assert_eq!(
            keys,
            [
                ("name".into(), "string \"demo\"".into()),
                ("items".into(), "array of 3".into()),
                ("meta".into(), "object with 2 keys".into()),
                ("n".into(), "null".into()),
                ("x".into(), "number 1.5".into()),
            ]
        );
    }

    #[test]
    fn scalar_document_and_errors() {
        assert_eq!(run("42").0.unwrap(), Shape::Scalar("number 42".into()));
        let err = run(r#"[{"a":1},"#).0.unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(run("[1] x").0.is_err());
        assert!(validate(&b"{\"a\": [1, 2, {\"b\": null}]}\n"[..]).is_ok());
        assert!(validate(&b"{\"a\": }"[..]).is_err());
        assert!(validate(&b""[..]).is_err());
    }

    #[test]
    fn sink_errors_abort_the_scan() {
        let doc = format!("[{}1]", "1,".repeat(500));
        let (r, c) = run(&doc);
        assert!(r.unwrap_err().to_string().contains("stop"));
        assert_eq!(c.rows.len(), 101);
    }

    #[test]
    fn long_cells_are_capped() {
        let doc = format!(r#"[{{"a":"{}"}}]"#, "é".repeat(CELL_CAP));
        let (_, c) = run(&doc);
        let cell = &c.rows[0][0];
        assert!(
            cell.len() >= CELL_CAP && cell.len() <= CELL_CAP + 3,
            "{}",
            cell.len()
        );
        assert!(cell.ends_with("é…"));
    }
}
