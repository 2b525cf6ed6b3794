//! JSON helpers shared by the REST codecs of both protocols: numeric elements
//! to and from JSON values with range checks, nesting of flat values, and
//! the pieces of the streaming decoders (no `Value` tree of the body): a
//! validating skip, a bounded re-rendering of a value's text, and parsing
//! of one value from a slice.
//!
//! The streaming decoders read a body with serde_json's own parser, so what
//! they refuse as JSON and the error's text are what `serde_json::from_slice`
//! into a `Value` reports. Parts kept as `RawValue` (a borrowed slice of the
//! body, checked only for structure) are parsed again in full later; where
//! that finds a fault, or a request is refused for its content, the whole
//! body is first re-validated with [`validate`], so a body that is not JSON
//! is reported as such, at the place `Value` parsing reports it.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

use crate::DataType;

/// Why a JSON value is not an element of the wanted type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NumberError {
    /// The JSON kind does not fit the type (a string for FP32, a float for INT8, ...).
    Kind,
    /// The value is of the right kind but outside the type's range; holds the
    /// value as JSON text.
    Range(String),
}

/// A JSON scalar as the parser reports it (serde_json reads non-negative
/// integers as `U64`, negative ones as `I64`, everything else as `F64`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scalar {
    /// A non-negative integer.
    U64(u64),
    /// A negative integer.
    I64(i64),
    /// A number with a fraction or exponent (or out of the integer ranges).
    F64(f64),
    /// `true` or `false`.
    Bool(bool),
    /// Anything else: `null`, a string, an array or an object.
    Other,
}

impl Scalar {
    /// The scalar of a parsed value.
    pub(crate) fn of(value: &Value) -> Scalar {
        match value {
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Scalar::U64(u),
                (None, Some(i)) => Scalar::I64(i),
                _ => Scalar::F64(n.as_f64().unwrap_or(f64::NAN)),
            },
            _ => Scalar::Other,
        }
    }

    /// The value's text as `Value::to_string` writes it (`Other`: empty).
    pub(crate) fn text(self) -> String {
        match self {
            Scalar::U64(u) => u.to_string(),
            Scalar::I64(i) => i.to_string(),
            Scalar::F64(f) => Number::from_f64(f).map_or_else(|| "null".into(), |n| n.to_string()),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Other => String::new(),
        }
    }
}

/// Appends the little-endian bytes of `value` as one element of `dtype`.
/// Integers must be JSON integers within range; floats accept any JSON number
/// within range; bools accept only `true`/`false`.
pub(crate) fn push_element(
    dtype: DataType,
    value: &Value,
    out: &mut Vec<u8>,
) -> Result<(), NumberError> {
    push_scalar(dtype, Scalar::of(value), out)
}

/// [`push_element`] of a scalar.
#[inline]
pub(crate) fn push_scalar(
    dtype: DataType,
    value: Scalar,
    out: &mut Vec<u8>,
) -> Result<(), NumberError> {
    #[inline]
    fn int<T: TryFrom<i64> + TryFrom<u64>>(value: Scalar) -> Result<T, NumberError> {
        match value {
            Scalar::U64(u) => T::try_from(u).map_err(|_| NumberError::Range(value.text())),
            Scalar::I64(i) => T::try_from(i).map_err(|_| NumberError::Range(value.text())),
            _ => Err(NumberError::Kind),
        }
    }
    #[inline]
    fn float(value: Scalar) -> Result<f64, NumberError> {
        match value {
            Scalar::U64(u) => Ok(u as f64),
            Scalar::I64(i) => Ok(i as f64),
            Scalar::F64(f) => Ok(f),
            _ => Err(NumberError::Kind),
        }
    }
    // A finite value is in range when it rounds to a finite value of the
    // type: the shortest text of f32::MAX (`3.4028235e38`, what numpy
    // prints) is a little above it and rounds to it.
    #[inline]
    fn narrow<T>(
        value: Scalar,
        convert: impl Fn(f64) -> T,
        finite: impl Fn(&T) -> bool,
    ) -> Result<T, NumberError> {
        let v = float(value)?;
        let narrowed = convert(v);
        if v.is_finite() && !finite(&narrowed) {
            Err(NumberError::Range(value.text()))
        } else {
            Ok(narrowed)
        }
    }
    match dtype {
        DataType::Bool => match value {
            Scalar::Bool(b) => out.push(u8::from(b)),
            _ => return Err(NumberError::Kind),
        },
        DataType::Int8 => out.extend_from_slice(&int::<i8>(value)?.to_le_bytes()),
        DataType::Int16 => out.extend_from_slice(&int::<i16>(value)?.to_le_bytes()),
        DataType::Int32 => out.extend_from_slice(&int::<i32>(value)?.to_le_bytes()),
        DataType::Int64 => out.extend_from_slice(&int::<i64>(value)?.to_le_bytes()),
        DataType::Uint8 => out.extend_from_slice(&int::<u8>(value)?.to_le_bytes()),
        DataType::Uint16 => out.extend_from_slice(&int::<u16>(value)?.to_le_bytes()),
        DataType::Uint32 => out.extend_from_slice(&int::<u32>(value)?.to_le_bytes()),
        DataType::Uint64 => out.extend_from_slice(&int::<u64>(value)?.to_le_bytes()),
        DataType::Fp16 => {
            let v = narrow(value, half::f16::from_f64, |h| h.is_finite())?;
            out.extend_from_slice(&v.to_le_bytes());
        }
        DataType::Bf16 => {
            let v = narrow(value, half::bf16::from_f64, |h| h.is_finite())?;
            out.extend_from_slice(&v.to_le_bytes());
        }
        DataType::Fp32 => {
            let v = narrow(value, |v| v as f32, |f| f.is_finite())?;
            out.extend_from_slice(&v.to_le_bytes());
        }
        DataType::Fp64 => out.extend_from_slice(&float(value)?.to_le_bytes()),
        DataType::String | DataType::Bytes => return Err(NumberError::Kind),
    }
    Ok(())
}

/// The JSON value of one numeric element of `dtype`, read from exactly
/// `item_size` bytes. Non-finite floats become `null` (JSON has no NaN).
pub(crate) fn element_value(dtype: DataType, b: &[u8]) -> Value {
    fn float(v: f64) -> Value {
        Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
    // The shortest decimal that reads back as the same value at the
    // type's own width (`0.001`, not `0.0010000000474974513`), held as the
    // f64 nearest to it, which serde_json writes with those digits.
    fn float32(v: f32) -> Value {
        if !v.is_finite() {
            return Value::Null;
        }
        float(shortest_f32(v))
    }
    let arr = |n: usize| -> [u8; 8] {
        let mut a = [0u8; 8];
        a[..n].copy_from_slice(&b[..n]);
        a
    };
    match dtype {
        DataType::Bool => Value::Bool(b[0] != 0),
        DataType::Int8 => Value::from(b[0] as i8),
        DataType::Uint8 => Value::from(b[0]),
        DataType::Int16 => Value::from(i16::from_le_bytes([b[0], b[1]])),
        DataType::Uint16 => Value::from(u16::from_le_bytes([b[0], b[1]])),
        DataType::Int32 => Value::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DataType::Uint32 => Value::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DataType::Int64 => Value::from(i64::from_le_bytes(arr(8))),
        DataType::Uint64 => Value::from(u64::from_le_bytes(arr(8))),
        DataType::Fp16 => {
            let v = half::f16::from_le_bytes([b[0], b[1]]);
            float(shortest_half(v.to_f32(), |d| {
                half::f16::from_f64(d).to_bits() == v.to_bits()
            }))
        }
        DataType::Bf16 => {
            let v = half::bf16::from_le_bytes([b[0], b[1]]);
            float(shortest_half(v.to_f32(), |d| {
                half::bf16::from_f64(d).to_bits() == v.to_bits()
            }))
        }
        DataType::Fp32 => float32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DataType::Fp64 => float(f64::from_le_bytes(arr(8))),
        DataType::String | DataType::Bytes => Value::Null,
    }
}

/// The f64 nearest to the shortest decimal that reads back as `v` (finite).
fn shortest_f32(v: f32) -> f64 {
    let mut buffer = ryu::Buffer::new();
    // ryu's output always parses.
    buffer.format_finite(v).parse().unwrap_or(f64::from(v))
}

/// The f64 nearest to the shortest decimal `d` of at most 5 significant
/// digits (enough for every FP16 and BF16 value) for which `same(d)`;
/// `v` itself when `v` is not finite or none is found.
fn shortest_half(v: f32, same: impl Fn(f64) -> bool) -> f64 {
    if v.is_finite() {
        for digits in 0..5 {
            if let Ok(d) = format!("{v:.digits$e}").parse::<f64>()
                && same(d)
            {
                return d;
            }
        }
    }
    f64::from(v)
}

/// Appends the compact JSON text of `value`, as `Value::to_string` writes
/// it (writing to a vector cannot fail).
pub(crate) fn write_value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Appends leaves nested in arrays of `shape`, row-major, as [`nest`] does:
/// `leaf(out, i)` writes leaf `i` and returns false past the last one (then
/// `null` is written); a scalar shape writes the one leaf.
pub(crate) fn write_nested(
    out: &mut Vec<u8>,
    shape: &[i64],
    next: &mut usize,
    leaf: &mut dyn FnMut(&mut Vec<u8>, usize) -> bool,
) {
    match shape.split_first() {
        None => {
            let i = *next;
            *next += 1;
            if !leaf(out, i) {
                out.extend_from_slice(b"null");
            }
        }
        Some((&d, rest)) => {
            out.push(b'[');
            for k in 0..usize::try_from(d).unwrap_or(0) {
                if k > 0 {
                    out.push(b',');
                }
                write_nested(out, rest, next, leaf);
            }
            out.push(b']');
        }
    }
}

/// Appends the JSON text of numeric element `i` of `raw` (see
/// [`element_value`]); false when there is no such element.
pub(crate) fn write_element(out: &mut Vec<u8>, dtype: DataType, raw: &[u8], i: usize) -> bool {
    let item = dtype.item_size().unwrap_or(1);
    match raw.get(i * item..(i + 1) * item) {
        Some(b) => {
            write_value(out, &element_value(dtype, b));
            true
        }
        None => false,
    }
}

/// At most how many bytes one element of `dtype` takes as JSON text, with
/// its comma (numeric types; the capacity a writer reserves).
pub(crate) fn element_text_bound(dtype: DataType) -> usize {
    match dtype {
        DataType::Bool => 6,
        DataType::Int8 | DataType::Uint8 => 5,
        DataType::Int16 | DataType::Uint16 => 7,
        DataType::Int32 | DataType::Uint32 => 12,
        DataType::Int64 | DataType::Uint64 => 21,
        DataType::Fp16 | DataType::Bf16 => 12,
        DataType::Fp32 => 17,
        DataType::Fp64 => 26,
        DataType::String | DataType::Bytes => 3,
    }
}

/// Nests flat row-major `values` into arrays of `shape` (the tree-based
/// encoders, kept for the tests). A scalar shape `[]`
/// gives the single value itself. The caller guarantees that the number of
/// values equals the element count of `shape`.
#[cfg(test)]
pub(crate) fn nest(shape: &[i64], values: &mut impl Iterator<Item = Value>) -> Value {
    match shape.split_first() {
        None => values.next().unwrap_or(Value::Null),
        Some((&d, rest)) => Value::Array(
            (0..usize::try_from(d).unwrap_or(0))
                .map(|_| nest(rest, values))
                .collect(),
        ),
    }
}

/// The nesting serde_json refuses: the 128th array or object inside
/// another ("recursion limit exceeded").
pub(crate) const MAX_LEVEL: usize = 128;

/// The error of a nested value that would be too deep in the whole body (a
/// value parsed on its own starts serde_json's count afresh).
fn too_deep<E: de::Error>() -> E {
    E::custom("recursion limit exceeded")
}

/// The level of a container inside `level` enclosing ones, or the error
/// serde_json reports for it in the whole body.
#[inline]
pub(crate) fn enter<E: de::Error>(level: usize) -> Result<usize, E> {
    if level + 1 >= MAX_LEVEL {
        Err(too_deep())
    } else {
        Ok(level + 1)
    }
}

/// Parses the whole of `bytes` (trailing whitespace only) with `seed`.
pub(crate) fn parse_all<'de, S: DeserializeSeed<'de>>(
    bytes: &'de [u8],
    seed: S,
) -> Result<S::Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = seed.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Parses the whole of `text` (trailing whitespace only) with `seed`.
pub(crate) fn parse_text<'de, S: DeserializeSeed<'de>>(
    text: &'de str,
    seed: S,
) -> Result<S::Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = seed.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Parses the first value of `text` with `seed` (what follows is ignored:
/// a value found inside a larger, already checked one).
pub(crate) fn parse_first<'de, S: DeserializeSeed<'de>>(
    text: &'de str,
    seed: S,
) -> Result<S::Value, serde_json::Error> {
    seed.deserialize(&mut serde_json::Deserializer::from_str(text))
}

/// Checks that `bytes` is one JSON value as `serde_json::from_slice` into
/// a `Value` would, with the same error, without building the tree.
pub(crate) fn validate(bytes: &[u8]) -> Result<(), serde_json::Error> {
    parse_all(bytes, Validate { level: 0 })
}

/// Parses and discards one value, checking it as `Value` parsing does
/// (strings, numbers, nesting); `level` is the number of arrays and objects
/// around it in the whole body.
#[derive(Clone, Copy)]
pub(crate) struct Validate {
    pub level: usize,
}

impl<'de> DeserializeSeed<'de> for Validate {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Validate {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let level = enter(self.level)?;
        while seq.next_element_seed(Validate { level })?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let level = enter(self.level)?;
        while map.next_key_seed(Validate { level })?.is_some() {
            map.next_value_seed(Validate { level })?;
        }
        Ok(())
    }
}

/// The index of a map key among `names`, read without allocating.
pub(crate) struct KeySeed(pub &'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<usize>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, s: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|k| *k == s))
    }
}

/// A string value, or the fact that the value is of another kind (which is
/// parsed and discarded).
#[derive(Clone, Debug)]
pub(crate) enum Text<'a> {
    /// A string, borrowed from the body where it has no escapes.
    Str(std::borrow::Cow<'a, str>),
    /// Another kind of value.
    Other,
}

/// Reads a [`Text`]; `level` as for [`Validate`].
#[derive(Clone, Copy)]
pub(crate) struct TextSeed {
    pub level: usize,
}

impl<'de> DeserializeSeed<'de> for TextSeed {
    type Value = Text<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Text<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TextSeed {
    type Value = Text<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'de>, E> {
        Ok(Text::Str(s.into()))
    }
    fn visit_str<E>(self, s: &str) -> Result<Text<'de>, E> {
        Ok(Text::Str(s.to_owned().into()))
    }
    fn visit_string<E>(self, s: String) -> Result<Text<'de>, E> {
        Ok(Text::Str(s.into()))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Text<'de>, E> {
        Ok(Text::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Text<'de>, E> {
        Ok(Text::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Text<'de>, E> {
        Ok(Text::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Text<'de>, E> {
        Ok(Text::Other)
    }
    fn visit_unit<E>(self) -> Result<Text<'de>, E> {
        Ok(Text::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Text<'de>, A::Error> {
        Validate { level: self.level }.visit_seq(seq)?;
        Ok(Text::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Text<'de>, A::Error> {
        Validate { level: self.level }.visit_map(map)?;
        Ok(Text::Other)
    }
}

/// The byte length of the first `chars` characters of `s`.
fn char_prefix(s: &str, chars: usize) -> usize {
    s.char_indices().nth(chars).map_or(s.len(), |(i, _)| i)
}

/// Re-renders one value as `Value::to_string` writes it (compact, object
/// keys sorted, the last of repeated keys kept), without building the tree.
/// With a `cap`, only the first `cap` bytes are exact (each part is cut
/// once the text is that long, and the parts that follow are only
/// checked), so the work and memory stay in proportion to `cap`.
#[derive(Clone, Copy)]
pub(crate) struct Render {
    pub cap: usize,
    pub level: usize,
}

impl Render {
    /// The first `max` bytes of the text of a string value `s`, cut on a
    /// character boundary, as `Value::to_string` writes them.
    pub(crate) fn string(s: &str, max: usize) -> String {
        // Each character takes at least one byte of the quoted text.
        let shown = &s[..char_prefix(s, max)];
        let mut text = serde_json::to_string(shown).unwrap_or_default();
        text.truncate(text.floor_char_boundary(max));
        text
    }
}

impl<'de> DeserializeSeed<'de> for Render {
    type Value = String;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Render {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<String, E> {
        Ok(Scalar::Bool(b).text())
    }
    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(Scalar::I64(v).text())
    }
    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(Scalar::U64(v).text())
    }
    fn visit_f64<E>(self, v: f64) -> Result<String, E> {
        Ok(Scalar::F64(v).text())
    }
    fn visit_str<E>(self, s: &str) -> Result<String, E> {
        let shown = &s[..char_prefix(s, self.cap.saturating_add(1))];
        Ok(serde_json::to_string(shown).unwrap_or_default())
    }
    fn visit_unit<E>(self) -> Result<String, E> {
        Ok("null".into())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
        let level = enter(self.level)?;
        let child = Render { level, ..self };
        let mut out = String::from("[");
        let mut first = true;
        while out.len() <= self.cap {
            match seq.next_element_seed(child)? {
                None => {
                    out.push(']');
                    return Ok(out);
                }
                Some(text) => {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    out.push_str(&text);
                }
            }
        }
        while seq.next_element_seed(Validate { level })?.is_some() {}
        Ok(out)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        let level = enter(self.level)?;
        let child = Render { level, ..self };
        // The smallest keys are the ones written first; an entry takes at
        // least one byte, so `cap + 1` of them decide the first `cap`.
        let keep = self.cap.saturating_add(1);
        let mut entries = std::collections::BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(child)?;
            entries.insert(key, value);
            if entries.len() > keep {
                entries.pop_last();
            }
        }
        let mut out = String::from("{");
        for (i, (key, value)) in entries.iter().enumerate() {
            if out.len() > self.cap {
                return Ok(out);
            }
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(key).unwrap_or_default());
            out.push(':');
            out.push_str(value);
        }
        out.push('}');
        Ok(out)
    }
}

/// The high bit of each byte of `x` that equals `c` (exact: no carries
/// between bytes).
#[inline]
fn bytes_equal(x: u64, c: u8) -> u64 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    let y = x ^ (0x0101_0101_0101_0101 * u64::from(c));
    !(((y & LOW7).wrapping_add(LOW7)) | y | LOW7)
}

/// The shape of a nested JSON array from the first element at each depth
/// (the lengths of the arrays met descending through first elements, up to
/// an empty array or a non-array), and the offset of the value where the
/// descent stopped, read from the text of an array that has already been
/// checked for structure (a `RawValue`). One pass over the bytes; nothing
/// is parsed.
pub(crate) fn first_path(text: &[u8]) -> (Vec<i64>, usize) {
    fn skip_ws(text: &[u8], mut i: usize) -> usize {
        while i < text.len() && matches!(text[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        i
    }
    let mut i = skip_ws(text, 0);
    let mut open = 0usize;
    loop {
        if text.get(i) != Some(&b'[') {
            break;
        }
        let inner = skip_ws(text, i + 1);
        if text.get(inner) == Some(&b']') {
            break;
        }
        open += 1;
        i = inner;
    }
    let leaf = i;
    // Count the elements of the open arrays, innermost first: commas at
    // their own level, skipping strings and other containers.
    let mut lengths = vec![1i64; open];
    let mut current = open;
    let mut nested = 0usize;
    while current > 0 && i < text.len() {
        // Eight bytes at a time while they hold no quote, bracket or brace
        // (a run of numbers): only their commas count.
        if let Some(chunk) = text.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) {
            let x = u64::from_le_bytes(chunk);
            let structural = bytes_equal(x, b'"')
                | bytes_equal(x, b'[')
                | bytes_equal(x, b']')
                | bytes_equal(x, b'{')
                | bytes_equal(x, b'}');
            if structural == 0 {
                if nested == 0 {
                    lengths[current - 1] += i64::from(bytes_equal(x, b',').count_ones() as u8);
                }
                i += 8;
                continue;
            }
        }
        match text[i] {
            b'"' => {
                i += 1;
                while i < text.len() {
                    match text[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b'[' | b'{' => nested += 1,
            b']' | b'}' => {
                if nested > 0 {
                    nested -= 1;
                } else {
                    current -= 1;
                }
            }
            b',' if nested == 0 => lengths[current - 1] += 1,
            _ => {}
        }
        i += 1;
    }
    (lengths, leaf)
}

/// JSON texts for the differential tests of the streaming decoders: any
/// value, with repeated keys, odd numbers and strings, deep nesting, and
/// now and then a fault.
#[cfg(test)]
pub(crate) mod text_gen {
    use proptest::prelude::*;

    /// A scalar's text.
    pub(crate) fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (-3i64..300).prop_map(|v| v.to_string()),
            2 => prop_oneof![
                Just("0.5"), Just("-1.25"), Just("1.0"), Just("1e2"), Just("-0"), Just("0.1"),
                Just("1e400"), Just("-1e-400"), Just("3.4028236e38"), Just("3.4028235e38"),
                Just("65520"), Just("65504.0"), Just("128"), Just("-129"), Just("256"),
                Just("2147483648"), Just("-2147483649"), Just("9223372036854775808"),
                Just("18446744073709551616"), Just("-9223372036854775809"), Just("1E15"),
            ]
            .prop_map(String::from),
            1 => any::<i64>().prop_map(|v| v.to_string()),
            1 => any::<u64>().prop_map(|v| v.to_string()),
            1 => any::<f64>()
                .prop_filter("finite", |v| v.is_finite())
                .prop_map(|v| format!("{v:e}")),
            2 => prop_oneof![Just("null"), Just("true"), Just("false")].prop_map(String::from),
            3 => string(),
        ]
    }

    /// A string's text, with escapes now and then.
    pub(crate) fn string() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => "[a-z0-9 ]{0,6}".prop_map(|s| format!("\"{s}\"")),
            1 => "[a-zé日\\x00-\\x1f\"\\\\/]{0,50}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            1 => prop_oneof![
                Just(r#""\u0041\/\n""#), Just(r#""\ud800""#), Just(r#""\ud83d\ude00""#),
                Just(r#""AA==""#), Just(r#""AAAAAA==""#), Just(r#""AAA""#), Just(r#""""#),
            ]
            .prop_map(String::from),
        ]
    }

    /// Any value, up to a few levels deep.
    pub(crate) fn value() -> impl Strategy<Value = String> {
        scalar().prop_recursive(4, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key(), inner), 0..4).prop_map(|v| object(&v)),
            ]
        })
    }

    /// An object key.
    pub(crate) fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[a-c]{0,2}".prop_map(|s| format!("\"{s}\"")),
            1 => string(),
        ]
    }

    /// An object of `(key text, value text)`.
    pub(crate) fn object(entries: &[(String, String)]) -> String {
        let parts: Vec<String> = entries.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        format!("{{{}}}", parts.join(","))
    }

    /// Nested arrays of `leaf` values, rectangular or not.
    pub(crate) fn nested(leaf: BoxedStrategy<String>) -> impl Strategy<Value = String> {
        leaf.prop_recursive(4, 40, 4, |inner| {
            prop_oneof![
                4 => (inner.clone(), 0usize..4).prop_map(|(v, n)| format!("[{}]", vec![v; n].join(","))),
                2 => prop::collection::vec(inner, 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            ]
        })
    }

    /// `text` with a fault now and then: cut short, a byte changed, a value
    /// nested deeper than serde_json parses.
    pub(crate) fn faulty(text: String) -> impl Strategy<Value = String> {
        let len = text.len();
        prop_oneof![
            12 => Just(text.clone()),
            1 => (0..=len).prop_map({
                let text = text.clone();
                move |i| text[..text.floor_char_boundary(i)].to_owned()
            }),
            1 => (0..=len, prop_oneof![Just("]"), Just("}"), Just(","), Just("\""), Just("x"), Just(" ")])
                .prop_map({
                    let text = text.clone();
                    move |(i, b)| {
                        let i = text.floor_char_boundary(i);
                        format!("{}{b}{}", &text[..i], &text[i..])
                    }
                }),
        ]
    }

    /// `inner` inside `depth` arrays.
    pub(crate) fn deep(inner: &str, depth: usize) -> String {
        format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The element's JSON text, read back through the decoder.
    fn round_trip(dtype: DataType, bytes: &[u8]) -> (String, Vec<u8>) {
        let text = serde_json::to_string(&element_value(dtype, bytes)).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        let mut back = Vec::new();
        push_element(dtype, &value, &mut back).unwrap();
        (text, back)
    }

    proptest::proptest! {
        /// The shape read from the text is the one of the parsed value, and
        /// the descent stops at its first leaf.
        #[test]
        fn first_path_reads_the_shape_of_the_parsed_array(
            text in text_gen::nested(proptest::prelude::Strategy::boxed(text_gen::value())),
            long in proptest::prelude::any::<bool>(),
        ) {
            let text = if long { text.replace(',', " ,  \n\t").replace("1", "1234567890123") } else { text };
            let Ok(value) = serde_json::from_str::<Value>(&text) else {
                return Ok(());
            };
            if !value.is_array() {
                return Ok(());
            }
            let mut shape = Vec::new();
            let mut leaf = &value;
            while let Value::Array(items) = leaf {
                let Some(first) = items.first() else { break };
                shape.push(items.len() as i64);
                leaf = first;
            }
            let (found, at) = first_path(text.as_bytes());
            proptest::prop_assert_eq!(&found, &shape, "{}", text);
            let mut de = serde_json::Deserializer::from_str(&text[at..]);
            let first = <Value as serde::Deserialize>::deserialize(&mut de).unwrap();
            proptest::prop_assert_eq!(&first, leaf, "{}", text);
        }
    }

    #[test]
    fn floats_are_written_with_the_shortest_text_of_their_own_width() {
        let f32_text = |v: f32| round_trip(DataType::Fp32, &v.to_le_bytes()).0;
        assert_eq!(f32_text(0.001), "0.001");
        assert_eq!(f32_text(0.1), "0.1");
        assert_eq!(f32_text(1.0), "1.0");
        assert_eq!(f32_text(-2.5e-38), "-2.5e-38");
        assert_eq!(f32_text(f32::MAX), "3.4028235e+38");
        assert_eq!(
            element_value(DataType::Fp32, &f32::NAN.to_le_bytes()),
            Value::Null
        );
        let f16 = |v: f32| round_trip(DataType::Fp16, &half::f16::from_f32(v).to_le_bytes()).0;
        assert_eq!(f16(0.1), "0.1");
        assert_eq!(f16(65504.0), "65500.0");
        let bf16 = |v: f32| round_trip(DataType::Bf16, &half::bf16::from_f32(v).to_le_bytes()).0;
        assert_eq!(bf16(0.1), "0.1");
        assert_eq!(bf16(3.0e38), "3e+38");
    }

    #[test]
    fn every_half_value_reads_back_bit_exact() {
        for bits in 0..=u16::MAX {
            for dtype in [DataType::Fp16, DataType::Bf16] {
                let finite = match dtype {
                    DataType::Fp16 => half::f16::from_bits(bits).is_finite(),
                    _ => half::bf16::from_bits(bits).is_finite(),
                };
                if !finite {
                    continue;
                }
                let (text, back) = round_trip(dtype, &bits.to_le_bytes());
                assert_eq!(
                    back,
                    bits.to_le_bytes(),
                    "{dtype:?} {bits:#06x} written {text}"
                );
            }
        }
    }

    #[test]
    fn fp32_values_read_back_bit_exact() {
        // A million bit patterns spread over every exponent, and the edges.
        let mut x: u32 = 0x9E37_79B9;
        let edges = [0u32, 1, 0x007F_FFFF, 0x0080_0000, 0x7F7F_FFFF, 0x8000_0001];
        for i in 0..1_000_000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let bits = if (i as usize) < edges.len() {
                edges[i as usize]
            } else {
                x
            };
            let v = f32::from_bits(bits);
            if !v.is_finite() {
                continue;
            }
            let (text, back) = round_trip(DataType::Fp32, &bits.to_le_bytes());
            assert_eq!(back, bits.to_le_bytes(), "{bits:#010x} written {text}");
            assert!(text.len() <= 24, "{bits:#010x} written {text}");
        }
    }
}
