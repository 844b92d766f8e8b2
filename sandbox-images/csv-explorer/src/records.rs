//! JSON and NDJSON files as rows, read with `serde_json`. A top-level array, or the values
//! of an NDJSON file, arrive one element at a time (never the whole document in memory);
//! objects become rows keyed by column, any other value goes into a `(value)` column. A
//! top-level object is summarised key by key.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::stats::{MAX_COLUMNS, truncate_chars};

/// Longest text kept for one cell (bytes); nested values are compact JSON up to this size.
pub const CELL_CAP: usize = 8 * 1024;
/// Column used for elements that are not objects.
pub const VALUE_COLUMN: &str = "(value)";
/// Top-level object keys listed in a summary.
pub const MAX_KEYS: usize = 1000;

/// What a JSON document is, once read.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// An array (or NDJSON lines): its elements went to the caller.
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

/// One element of an array. An object keeps the order of its keys: they become columns in
/// the order the file first names them (`serde_json::Value` would sort them).
#[derive(Debug, PartialEq)]
pub enum Element {
    Object(Vec<(String, Value)>),
    Other(Value),
}

/// Tells the reader to stop (a search that was cancelled, say).
#[derive(Debug)]
pub struct Stop;

/// Reads a JSON document, handing each element of a top-level array to `each`. An `Err`
/// from `each` stops the reading with an error.
pub fn read_json<R: Read>(
    reader: R,
    each: &mut dyn FnMut(Element) -> Result<(), Stop>,
) -> serde_json::Result<Shape> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    let shape = de.deserialize_any(Top { each })?;
    de.end()?;
    Ok(shape)
}

/// Reads an NDJSON file (one JSON value per line), handing each value to `each`.
pub fn read_ndjson<R: Read>(
    reader: R,
    each: &mut dyn FnMut(Element) -> Result<(), Stop>,
) -> serde_json::Result<Shape> {
    let (mut len, mut objects) = (0, 0);
    for element in serde_json::Deserializer::from_reader(reader).into_iter::<Element>() {
        let element = element?;
        len += 1;
        objects += u64::from(matches!(element, Element::Object(_)));
        each(element).map_err(|Stop| de::Error::custom("stopped"))?;
    }
    Ok(Shape::Array { len, objects })
}

/// Key → column, in order of first appearance, capped; and the cells of the last element.
#[derive(Default, Debug)]
pub struct Columns {
    index: HashMap<String, usize>,
    pub names: Vec<String>,
    /// Keys that were dropped because the column cap was reached.
    pub overflow: bool,
    cells: Vec<String>,
}

impl Columns {
    fn column(&mut self, key: &str) -> Option<usize> {
        if let Some(&i) = self.index.get(key) {
            return Some(i);
        }
        if self.names.len() >= MAX_COLUMNS {
            self.overflow = true;
            return None;
        }
        self.index.insert(key.to_string(), self.names.len());
        self.names.push(key.to_string());
        Some(self.names.len() - 1)
    }

    /// Reads `element` into cells by column ("" where it has no value); keys not seen
    /// before become columns at the end of `names`.
    pub fn fill(&mut self, element: &Element) {
        self.cells.iter_mut().for_each(String::clear);
        match element {
            Element::Object(entries) => {
                for (key, value) in entries {
                    self.put(key, value);
                }
            }
            Element::Other(value) => self.put(VALUE_COLUMN, value),
        }
    }

    /// The cells of the last element filled in.
    pub fn cells(&self) -> &[String] {
        &self.cells
    }

    fn put(&mut self, key: &str, value: &Value) {
        if let Some(i) = self.column(key) {
            if self.cells.len() <= i {
                self.cells.resize(i + 1, String::new());
            }
            self.cells[i] = cell_text(value);
        }
    }
}

/// A value as a cell shows it: text as is, nested values as compact JSON, null as nothing.
pub fn cell_text(value: &Value) -> String {
    let text = match value {
        Value::Null => return String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    cap(text)
}

/// Cuts at `CELL_CAP` bytes (on a character boundary), with an ellipsis.
fn cap(mut s: String) -> String {
    if s.len() > CELL_CAP {
        let mut end = CELL_CAP;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

struct Top<'a> {
    each: &'a mut dyn FnMut(Element) -> Result<(), Stop>,
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let (mut len, mut objects) = (0, 0);
        while let Some(element) = seq.next_element::<Element>()? {
            len += 1;
            objects += u64::from(matches!(element, Element::Object(_)));
            (self.each)(element).map_err(|Stop| de::Error::custom("stopped"))?;
        }
        Ok(Shape::Array { len, objects })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let (mut keys, mut total) = (Vec::new(), 0);
        while let Some(key) = map.next_key::<String>()? {
            let Described(what) = map.next_value()?;
            total += 1;
            if keys.len() < MAX_KEYS {
                keys.push((key, what));
            }
        }
        Ok(Shape::Object { keys, total })
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Shape, E> {
        Describe.visit_bool(v).map(Shape::Scalar)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Shape, E> {
        Describe.visit_i64(v).map(Shape::Scalar)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Shape, E> {
        Describe.visit_u64(v).map(Shape::Scalar)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Shape, E> {
        Describe.visit_f64(v).map(Shape::Scalar)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Shape, E> {
        Describe.visit_str(v).map(Shape::Scalar)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
        Describe.visit_unit().map(Shape::Scalar)
    }
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Element, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Element;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Element::Object(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Element, A::Error> {
                let seq = de::value::SeqAccessDeserializer::new(seq);
                Value::deserialize(seq).map(Element::Other)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Element, E> {
                Ok(Element::Other(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Element, E> {
                Ok(Element::Other(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Element, E> {
                Ok(Element::Other(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Element, E> {
                Ok(Element::Other(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Element, E> {
                Ok(Element::Other(v.into()))
            }
            fn visit_unit<E>(self) -> Result<Element, E> {
                Ok(Element::Other(Value::Null))
            }
        }
        d.deserialize_any(V)
    }
}

/// A short description of a value ("array of 3", "number 42", …), read past without
/// keeping its content.
struct Described(String);

impl<'de> Deserialize<'de> for Described {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Described, D::Error> {
        d.deserialize_any(Describe).map(Described)
    }
}

struct Describe;

impl<'de> Visitor<'de> for Describe {
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
        Ok(format!("string {}", Value::String(truncate_chars(v, 60))))
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

    /// Reads `doc` (NDJSON when `lines`) into (shape, column names, rows).
    fn read(doc: &str, lines: bool) -> (serde_json::Result<Shape>, Vec<String>, Vec<Vec<String>>) {
        let mut columns = Columns::default();
        let mut rows = Vec::new();
        let mut each = |e: Element| {
            columns.fill(&e);
            rows.push(columns.cells().to_vec());
            if rows.len() > 100 { Err(Stop) } else { Ok(()) }
        };
        let shape = if lines {
            read_ndjson(doc.as_bytes(), &mut each)
        } else {
            read_json(doc.as_bytes(), &mut each)
        };
        (shape, columns.names, rows)
    }

    #[test]
    fn array_of_objects_keeps_key_order() {
        let (shape, names, rows) = read(
            r#"[{"b":1,"a":"x"},{"a":"y","c":[1,{"k":null}],"b":2.5},{}]"#,
            false,
        );
        assert_eq!(shape.unwrap(), Shape::Array { len: 3, objects: 3 });
        assert_eq!(names, ["b", "a", "c"]);
        assert_eq!(rows[0], ["1", "x"]);
        assert_eq!(rows[1], ["2.5", "y", r#"[1,{"k":null}]"#]);
        assert!(rows[2].iter().all(String::is_empty));
    }

    #[test]
    fn other_values_use_the_value_column() {
        let (shape, names, rows) = read(r#"[1, "two", null, [3], {"k": true}]"#, false);
        assert_eq!(shape.unwrap(), Shape::Array { len: 5, objects: 1 });
        assert_eq!(names, [VALUE_COLUMN, "k"]);
        let joined: Vec<_> = rows.iter().map(|r| r.join("|")).collect();
        assert_eq!(joined, ["1", "two", "", "[3]", "|true"]);
    }

    #[test]
    fn ndjson_is_a_table_of_records() {
        let doc = "{\"id\": 1, \"name\": \"Ann\"}\n{\"name\": \"Bob\", \"id\": 2, \"tags\": [\"a\"]}\n\n7\n";
        let (shape, names, rows) = read(doc, true);
        assert_eq!(shape.unwrap(), Shape::Array { len: 3, objects: 2 });
        assert_eq!(names, ["id", "name", "tags", VALUE_COLUMN]);
        assert_eq!(rows[1], ["2", "Bob", r#"["a"]"#]);
        assert_eq!(rows[2], ["", "", "", "7"]);
        let (shape, _, rows) = read("{\"a\": 1}\n{\"a\": \n", true);
        assert!(shape.unwrap_err().is_eof());
        assert_eq!(rows.len(), 1, "the rows before the error are kept");
        assert_eq!(
            read("", true).0.unwrap(),
            Shape::Array { len: 0, objects: 0 }
        );
    }

    #[test]
    fn object_summary() {
        let (shape, _, rows) = read(
            r#"{"name":"demo","items":[1,2,3],"meta":{"a":1,"b":{}},"n":null,"x":1.5}"#,
            false,
        );
        assert!(rows.is_empty());
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
    fn scalars_errors_and_stops() {
        assert_eq!(
            read("42", false).0.unwrap(),
            Shape::Scalar("number 42".into())
        );
        let err = read(r#"[{"a":1},"#, false).0.unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(read("[1] x", false).0.is_err());
        let (shape, _, rows) = read(&format!("[{}1]", "1,".repeat(500)), false);
        assert!(shape.unwrap_err().to_string().contains("stopped"));
        assert_eq!(rows.len(), 101);
    }

    #[test]
    fn long_cells_are_capped() {
        let cell = cell_text(&Value::String("é".repeat(CELL_CAP)));
        assert!(
            cell.len() <= CELL_CAP + 3 && cell.ends_with("é…"),
            "{}",
            cell.len()
        );
    }
}
