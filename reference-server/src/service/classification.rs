//! Triton's `classification` extension: an output asked for with the
//! parameter `classification` (tritonclient's `class_count`) k comes back
//! as its top k classes, BYTES strings `"<value>:<index>"`, highest first,
//! and `"<value>:<index>:<label>"` where the model's configuration gives
//! the output a label file (`label_filename`) with a label for the index.
//!
//! The layout is Triton's: for a model whose requests batch, each row of
//! the output (`[rows, ...]`) is classified over all of its elements and
//! the output becomes `[rows, min(k, elements per row)]`; for a model
//! without a batch dimension the whole output is one row and becomes
//! `[min(k, elements)]`. Values are written as C's `std::to_string` does
//! (six decimals for floating point, integers as they are); ties keep the
//! lower index first.
//!
//! The text is bounded before it is written: a row's top k are selected
//! first, then formatted into one buffer checked against the reply limit
//! after every class. When the classes could together pass the limit (k
//! times the longest text a class of the type can have), a first pass
//! only measures the text, formatting each class into a scratch buffer it
//! reuses: a large k on a large output (a 2 MiB FP64 output of values near
//! 1e308 prints 83 MB) is refused having held no text at all, and text
//! that fits is written into a buffer of exactly its size.

use std::io::Write;

use bytes::Bytes;

use serving_proto::oip::Parameters;
use serving_proto::text::quote;
use serving_proto::{DataType, Element, Tensor};

use crate::error::ServeError;

/// The output parameter that asks for classification.
pub(crate) const PARAMETER: &str = "classification";

/// The class count an output asks for, if any: a non-negative integer,
/// 0 meaning none, as Triton reads it (its clients' `class_count` default).
pub(crate) fn class_count(
    output: &str,
    parameters: &Parameters,
) -> Result<Option<usize>, ServeError> {
    let Some(p) = parameters.get(PARAMETER) else {
        return Ok(None);
    };
    match p.as_u64() {
        Some(0) => Ok(None),
        Some(k) => Ok(Some(usize::try_from(k).unwrap_or(usize::MAX))),
        None => Err(ServeError::InvalidArgument(format!(
            "output '{}': parameter '{PARAMETER}' must be a non-negative integer, the number of classes to return (0: none)",
            quote(output)
        ))),
    }
}

/// The top-`k` classification of output `name`, `batched` when dimension 0
/// is the rows of a batching model, its text at most `max_text` bytes;
/// `labels` name the elements of a row.
pub(crate) fn classify(
    name: &str,
    tensor: &Tensor,
    k: usize,
    batched: bool,
    labels: Option<&[String]>,
    max_text: usize,
) -> Result<Tensor, ServeError> {
    let shape = tensor.shape();
    let rows = match (batched, shape.first()) {
        (true, Some(&r)) => Some(r.max(0) as usize),
        _ => None,
    };
    let count = tensor.element_count();
    let per_row = match rows {
        Some(0) => 0,
        Some(r) => count / r,
        None => count,
    };
    let refuse = |why: &str| {
        ServeError::InvalidArgument(format!(
            "output '{}' cannot be classified: {why}; classification applies to integer and FP32/FP64 outputs",
            quote(name)
        ))
    };
    let classes = rows.unwrap_or(1).saturating_mul(k.min(per_row));
    let written = match tensor.dtype() {
        DataType::Uint8 => written::<u8>(tensor, per_row, k, classes, labels, max_text, plain),
        DataType::Uint16 => written::<u16>(tensor, per_row, k, classes, labels, max_text, plain),
        DataType::Uint32 => written::<u32>(tensor, per_row, k, classes, labels, max_text, plain),
        DataType::Uint64 => written::<u64>(tensor, per_row, k, classes, labels, max_text, plain),
        DataType::Int8 => written::<i8>(tensor, per_row, k, classes, labels, max_text, plain),
        DataType::Int16 => written::<i16>(tensor, per_row, k, classes, labels, max_text, plain),
        DataType::Int32 => written::<i32>(tensor, per_row, k, classes, labels, max_text, plain),
        DataType::Int64 => written::<i64>(tensor, per_row, k, classes, labels, max_text, plain),
        DataType::Fp32 => written::<f32>(tensor, per_row, k, classes, labels, max_text, |t, v| {
            c_fixed(t, f64::from(v))
        }),
        DataType::Fp64 => written::<f64>(tensor, per_row, k, classes, labels, max_text, c_fixed),
        other => {
            return Err(refuse(&format!(
                "its datatype is {}",
                other.oip_name().unwrap_or("STRING")
            )));
        }
    }
    .ok_or_else(|| refuse("its data is not numeric"))?
    .map_err(|TooLong| {
        ServeError::ResourceExhausted(format!(
            "the classification of output '{}' takes more than {max_text} bytes of text, the most a reply carries (--max-msg-mb-size); ask for fewer classes",
            quote(name)
        ))
    })?;
    let kept = k.min(per_row) as i64;
    let shape = match rows {
        Some(r) => vec![r as i64, kept],
        None => vec![kept],
    };
    Tensor::from_elements(DataType::Bytes, shape, written.into_elements()).map_err(|e| {
        ServeError::Internal(format!("classification of output '{}': {e}", quote(name)))
    })
}

/// The text of `classes` classes of the top `k` of each row, within
/// `max` bytes: measured first when it could pass `max`, so that text too
/// long is refused before any is held; `None` as [`top`].
#[allow(clippy::too_many_arguments)]
fn written<T: Element + PartialOrd>(
    tensor: &Tensor,
    per_row: usize,
    k: usize,
    classes: usize,
    labels: Option<&[String]>,
    max: usize,
    show: impl Fn(&mut Text, T) + Copy,
) -> Option<Result<Text, TooLong>> {
    let label = labels
        .and_then(|l| l.iter().map(String::len).max())
        .map_or(0, |n| n + 1);
    let longest = longest_class(T::DTYPE).saturating_add(label);
    let most = classes.saturating_mul(longest.saturating_add(HANDLE));
    let capacity = if most > max {
        let mut measure = Text::measuring(max);
        if let Err(e) = top(tensor, per_row, k, labels, &mut measure, show)? {
            return Some(Err(e));
        }
        measure.total
    } else {
        classes.saturating_mul(longest)
    };
    let mut text = Text::new(capacity.min(max), classes, max);
    Some(top(tensor, per_row, k, labels, &mut text, show)?.map(|()| text))
}

/// The longest text of one class of `dtype`: its value as classification
/// writes it, `:` and a `u32` index.
fn longest_class(dtype: DataType) -> usize {
    let value = match dtype {
        // `%f` of -f64::MAX: the sign, 309 digits, the point and six
        // decimals.
        DataType::Fp32 | DataType::Fp64 => 317,
        // `-9223372036854775808`, `18446744073709551615`.
        _ => 20,
    };
    value + 1 + 10
}

/// The classes' text, written into one buffer of at most `max` bytes:
/// each class is a slice of it, no string of its own. A measuring text
/// keeps only the class being written and counts the rest.
struct Text {
    buf: Vec<u8>,
    ends: Vec<usize>,
    max: usize,
    /// Measuring: the bytes of the classes already ended.
    measuring: bool,
    total: usize,
    count: usize,
}

/// The text passed its bound.
struct TooLong;

/// What one class costs besides its text: a `Bytes` handle and its end.
const HANDLE: usize = std::mem::size_of::<Bytes>() + std::mem::size_of::<usize>();

impl Text {
    fn new(capacity: usize, classes: usize, max: usize) -> Text {
        Text {
            buf: Vec::with_capacity(capacity),
            ends: Vec::with_capacity(classes.min(max / HANDLE)),
            max,
            measuring: false,
            total: 0,
            count: 0,
        }
    }

    fn measuring(max: usize) -> Text {
        Text {
            buf: Vec::with_capacity(Self::SCRATCH),
            ends: Vec::new(),
            max,
            measuring: true,
            total: 0,
            count: 0,
        }
    }

    /// Room for the longest class a measuring text writes.
    const SCRATCH: usize = 512;

    /// Ends the class just written, refusing once past the bound: the text
    /// and each class's handle (its `Bytes` and its end, 40 bytes) count,
    /// so that a million classes of `0:0` are bounded as well as long ones.
    fn end(&mut self) -> Result<(), TooLong> {
        self.count += 1;
        let handles = self.count.saturating_mul(HANDLE);
        let text = self.total.saturating_add(self.buf.len());
        if text.saturating_add(handles) > self.max {
            return Err(TooLong);
        }
        if self.measuring {
            self.total = text;
            self.buf.clear();
        } else {
            self.ends.push(self.buf.len());
        }
        Ok(())
    }

    fn into_elements(self) -> Vec<Bytes> {
        let buf = Bytes::from(self.buf);
        let mut start = 0;
        self.ends
            .into_iter()
            .map(|end| {
                let element = buf.slice(start..end);
                start = end;
                element
            })
            .collect()
    }
}

/// An integer as it is.
fn plain<T: std::fmt::Display>(text: &mut Text, v: T) {
    let _ = write!(text.buf, "{v}");
}

/// C's `std::to_string` of a double: `%f`.
fn c_fixed(text: &mut Text, v: f64) {
    let _ = if v.is_nan() {
        text.buf.write_all(if v.is_sign_negative() {
            b"-nan"
        } else {
            b"nan"
        })
    } else if v.is_infinite() {
        text.buf.write_all(if v < 0.0 { b"-inf" } else { b"inf" })
    } else {
        write!(text.buf, "{v:.6}")
    };
}

/// Whether `v` has no order, not even with itself (NaN).
fn unordered<T: PartialOrd>(v: T) -> bool {
    v.partial_cmp(&v).is_none()
}

/// The `"value:index"` text of the top `k` of each row of `per_row`
/// elements, written into `text`; `None` when the tensor holds no raw data
/// of type `T` (or rows of more than `u32::MAX` elements, which no message
/// carries).
fn top<T: Element + PartialOrd>(
    tensor: &Tensor,
    per_row: usize,
    k: usize,
    labels: Option<&[String]>,
    text: &mut Text,
    show: impl Fn(&mut Text, T),
) -> Option<Result<(), TooLong>> {
    // Values are read in place from the output's bytes (no copy of the
    // output), and rows are ordered through u32 indices.
    let raw = tensor.raw().filter(|_| tensor.dtype() == T::DTYPE)?;
    let item = std::mem::size_of::<T>();
    if per_row == 0 {
        return Some(Ok(()));
    }
    let kept = k.min(per_row);
    let width = u32::try_from(per_row).ok()?;
    let mut order: Vec<u32> = Vec::with_capacity(per_row);
    for row in raw.chunks(per_row * item) {
        let at = |i: u32| T::read_le(&row[i as usize * item..][..item]);
        order.clear();
        order.extend(0..width.min((row.len() / item) as u32));
        // Highest first; NaN below every number; ties by lower index.
        let by = |a: &u32, b: &u32| {
            let (x, y) = (at(*a), at(*b));
            match y.partial_cmp(&x) {
                Some(o) => o,
                None => unordered(x).cmp(&unordered(y)),
            }
            .then(a.cmp(b))
        };
        if kept < order.len() {
            order.select_nth_unstable_by(kept - 1, by);
            order.truncate(kept);
        }
        order.sort_by(by);
        for &i in &order {
            show(text, at(i));
            let _ = write!(text.buf, ":{i}");
            if let Some(label) = labels.and_then(|l| l.get(i as usize)) {
                text.buf.push(b':');
                text.buf.extend_from_slice(label.as_bytes());
            }
            if let Err(e) = text.end() {
                return Some(Err(e));
            }
        }
    }
    Some(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(t: &Tensor) -> Vec<String> {
        t.elements()
            .unwrap()
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn a_class_count_of_zero_asks_for_none_as_in_triton() {
        use serving_proto::oip::Parameter;
        let with = |p: Parameter| Parameters::from([(PARAMETER.to_owned(), p)]);
        assert_eq!(class_count("y", &Parameters::new()).unwrap(), None);
        assert_eq!(class_count("y", &with(Parameter::Int64(0))).unwrap(), None);
        assert_eq!(
            class_count("y", &with(Parameter::Int64(3))).unwrap(),
            Some(3)
        );
        for bad in [Parameter::Int64(-1), Parameter::String("2".into())] {
            let e = class_count("y", &with(bad)).unwrap_err().to_string();
            assert!(e.contains("non-negative integer"), "{e}");
        }
    }

    #[test]
    fn rows_are_classified_apart_highest_first() {
        let t = Tensor::from_slice(&[2, 4], &[0.1f32, 0.7, 0.2, 0.7, 5.0, 1.0, 3.0, 2.0]).unwrap();
        let c = classify("y", &t, 3, true, None, 1 << 20).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(c.dtype(), DataType::Bytes);
        assert_eq!(
            strings(&c),
            [
                "0.700000:1",
                "0.700000:3",
                "0.200000:2",
                "5.000000:0",
                "3.000000:2",
                "2.000000:3"
            ]
        );
    }

    #[test]
    fn labels_follow_the_index_where_the_model_has_them() {
        let t = Tensor::from_slice(&[1, 3], &[0.1f32, 0.7, 0.2]).unwrap();
        let labels: Vec<String> = vec!["cat".into(), "dog".into()];
        let c = classify("y", &t, 3, true, Some(&labels), 1 << 20).unwrap();
        // Index 2 has no label: Triton writes none.
        assert_eq!(
            strings(&c),
            ["0.700000:1:dog", "0.200000:2", "0.100000:0:cat"]
        );
    }

    #[test]
    fn an_unbatched_output_is_one_row_and_k_is_clamped() {
        let t = Tensor::from_slice(&[1, 3], &[3i64, 9, -1]).unwrap();
        let c = classify("y", &t, 10, false, None, 1 << 20).unwrap();
        assert_eq!(c.shape(), &[3]);
        assert_eq!(strings(&c), ["9:1", "3:0", "-1:2"]);
    }

    #[test]
    fn nan_sorts_last_and_prints_as_c_does() {
        let t = Tensor::from_slice(&[3], &[f64::NAN, 1.5, f64::NEG_INFINITY]).unwrap();
        let c = classify("y", &t, 3, false, None, 1 << 20).unwrap();
        assert_eq!(strings(&c), ["1.500000:1", "-inf:2", "nan:0"]);
    }

    #[test]
    fn text_past_the_bound_is_refused_as_it_is_written() {
        let values = vec![1e308f64; 4096];
        let t = Tensor::from_slice(&[4096], &values).unwrap();
        // Each class prints 316 bytes: all of them need 1.3 MB.
        let e = classify("y", &t, 4096, false, None, 64 << 10).unwrap_err();
        assert!(matches!(e, ServeError::ResourceExhausted(_)), "{e:?}");
        assert!(e.to_string().contains("more than 65536 bytes"), "{e}");
        let c = classify("y", &t, 100, false, None, 64 << 10).unwrap();
        assert_eq!(c.element_count(), 100);
        assert!(strings(&c)[99].ends_with(".000000:99"));
    }

    #[test]
    fn text_that_could_pass_the_bound_is_measured_before_it_is_held() {
        let values = vec![1e308f64; 4096];
        let t = Tensor::from_slice(&[4096], &values).unwrap();
        // 100 classes of up to 328 bytes and their handles could pass
        // 36,000 bytes: measured (31,890 bytes and 4,000 of handles), then
        // written into a buffer of exactly its size.
        let text = written::<f64>(&t, 4096, 100, 100, None, 36_000, c_fixed)
            .unwrap()
            .ok()
            .unwrap();
        assert!(text.buf.len() > 30_000, "{}", text.buf.len());
        assert_eq!(text.buf.capacity(), text.buf.len());
        assert_eq!(text.ends.len(), 100);
        // Too long: refused by the measuring pass.
        assert!(
            written::<f64>(&t, 4096, 4096, 4096, None, 64 << 10, c_fixed)
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn texts_and_bools_are_refused() {
        let t = Tensor::from_strings(&[1], &["a"]).unwrap();
        let e = classify("y", &t, 1, false, None, 1 << 20).unwrap_err();
        assert!(
            e.to_string().contains("output 'y' cannot be classified"),
            "{e}"
        );
        let t = Tensor::from_slice(&[1], &[true]).unwrap();
        assert!(classify("y", &t, 1, false, None, 1 << 20).is_err());
    }
}
