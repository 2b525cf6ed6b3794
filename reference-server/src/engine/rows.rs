//! Tensors as rows along dimension 0: joined into a batch (one copy; none
//! for a batch of one), padded to a model's fixed batch, split back into
//! each job's rows (no copy: the parts share the batch's bytes), and
//! rows stacked for models without a batch dimension.

use bytes::Bytes;
use serving_proto::{Tensor, TensorData};

/// Rows of a tensor (its dimension 0; 1 for a scalar).
pub(crate) fn count(t: &Tensor) -> usize {
    t.shape().first().map_or(1, |&d| d.max(0) as usize)
}

fn with_rows(t: &Tensor, rows: usize) -> Vec<i64> {
    let mut shape = t.shape().to_vec();
    if let Some(d) = shape.first_mut() {
        *d = rows as i64;
    }
    shape
}

/// Joins tensors of the same type and row shape along dimension 0.
pub(crate) fn join(parts: &[&Tensor]) -> Result<Tensor, String> {
    let [first, rest @ ..] = parts else {
        return Err("no rows to join".into());
    };
    if rest.is_empty() {
        return Ok((*first).clone());
    }
    let rows = parts.iter().map(|t| count(t)).sum();
    let shape = with_rows(first, rows);
    match first.data() {
        TensorData::Raw(_) => {
            let mut raw = Vec::with_capacity(parts.iter().map(|t| t.payload_len()).sum());
            for p in parts {
                raw.extend_from_slice(p.raw().map_or(&[][..], |r| r));
            }
            Tensor::from_raw(first.dtype(), shape, Bytes::from(raw)).map_err(|e| e.to_string())
        }
        TensorData::Elements(_) => {
            let elements = parts
                .iter()
                .flat_map(|p| p.elements().unwrap_or_default().iter().cloned())
                .collect();
            Tensor::from_elements(first.dtype(), shape, elements).map_err(|e| e.to_string())
        }
    }
}

/// Rows `start..end` of `t`, sharing its bytes.
pub(crate) fn slice(t: &Tensor, start: usize, end: usize) -> Result<Tensor, String> {
    let rows = count(t);
    if t.shape().is_empty() || end > rows || start > end {
        return Err(format!(
            "rows {start}..{end} of an output with {rows} rows (shape {:?})",
            t.shape()
        ));
    }
    let per = serving_proto::tensor::element_count(&t.shape()[1..]).unwrap_or(0);
    let shape = with_rows(t, end - start);
    match t.data() {
        TensorData::Raw(raw) => {
            let item = t.dtype().item_size().unwrap_or(1);
            let bytes = raw.slice(start * per * item..end * per * item);
            Tensor::from_raw(t.dtype(), shape, bytes).map_err(|e| e.to_string())
        }
        TensorData::Elements(e) => {
            Tensor::from_elements(t.dtype(), shape, e[start * per..end * per].to_vec())
                .map_err(|e| e.to_string())
        }
    }
}

/// `t` with rows appended, copies of its first, up to `rows`.
pub(crate) fn pad(t: &Tensor, rows: usize) -> Result<Tensor, String> {
    let have = count(t);
    if have >= rows {
        return Ok(t.clone());
    }
    let first = slice(t, 0, 1)?;
    let mut parts = vec![t];
    parts.extend(std::iter::repeat_n(&first, rows - have));
    join(&parts)
}

/// Row `index` of `t` without its row dimension.
pub(crate) fn row(t: &Tensor, index: usize) -> Result<Tensor, String> {
    let one = slice(t, index, index + 1)?;
    let unit = one.shape()[1..].to_vec();
    one.reshape(unit).map_err(|e| e.to_string())
}

/// Tensors of the same type and shape stacked along a new dimension 0.
pub(crate) fn stack(parts: &[Tensor]) -> Result<Tensor, String> {
    let with_row: Vec<Tensor> = parts
        .iter()
        .map(|t| {
            let mut shape = vec![1];
            shape.extend_from_slice(t.shape());
            t.clone().reshape(shape).map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    if let Some(first) = with_row.first()
        && let Some(other) = with_row.iter().find(|t| t.shape() != first.shape())
    {
        return Err(format!(
            "rows of different shapes ({:?} and {:?}) cannot be stacked",
            first.shape(),
            other.shape()
        ));
    }
    join(&with_row.iter().collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[i64], v: &[f32]) -> Tensor {
        Tensor::from_slice(shape, v).unwrap()
    }

    #[test]
    fn join_slice_pad_and_stack_agree() {
        let a = t(&[1, 2], &[1.0, 2.0]);
        let b = t(&[2, 2], &[3.0, 4.0, 5.0, 6.0]);
        let j = join(&[&a, &b]).unwrap();
        assert_eq!(j.shape(), &[3, 2]);
        assert_eq!(
            j.to_vec::<f32>().unwrap(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        assert_eq!(slice(&j, 1, 3).unwrap(), b);
        assert_eq!(slice(&j, 0, 1).unwrap(), a);
        assert!(slice(&j, 2, 4).is_err());
        // Slices share the batch's bytes.
        let s = slice(&j, 1, 3).unwrap();
        assert_eq!(s.raw().unwrap().as_ptr(), j.raw().unwrap()[8..].as_ptr());
        let p = pad(&a, 3).unwrap();
        assert_eq!(
            p.to_vec::<f32>().unwrap(),
            vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0]
        );
        assert_eq!(row(&b, 1).unwrap(), t(&[2], &[5.0, 6.0]));
        let st = stack(&[t(&[2], &[1.0, 2.0]), t(&[2], &[3.0, 4.0])]).unwrap();
        assert_eq!(st.shape(), &[2, 2]);
        assert!(stack(&[t(&[2], &[1.0, 2.0]), t(&[1], &[3.0])]).is_err());
        // A batch of one is not copied.
        let one = join(&[&b]).unwrap();
        assert_eq!(one.raw().unwrap().as_ptr(), b.raw().unwrap().as_ptr());
    }

    #[test]
    fn string_rows_join_and_split() {
        let s = |v: &[&str]| {
            Tensor::from_elements(
                serving_proto::DataType::Bytes,
                vec![v.len() as i64],
                v.iter()
                    .map(|x| Bytes::copy_from_slice(x.as_bytes()))
                    .collect(),
            )
            .unwrap()
        };
        let j = join(&[&s(&["a"]), &s(&["b", "c"])]).unwrap();
        assert_eq!(j.shape(), &[3]);
        assert_eq!(slice(&j, 1, 3).unwrap(), s(&["b", "c"]));
    }
}
