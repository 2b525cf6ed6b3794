//! Conversions between tensors and `ndarray` arrays (feature `ndarray`).
//!
//! ```
//! use ndarray::array;
//! use serving_client::array::{from_array, to_array};
//!
//! let a = array![[1.0f32, 2.0], [3.0, 4.0]].into_dyn();
//! let t = from_array(&a);
//! assert_eq!(t.shape(), &[2, 2]);
//! assert_eq!(to_array::<f32>(&t)?, a);
//! # Ok::<(), serving_client::TensorError>(())
//! ```

use ndarray::{ArrayBase, ArrayD, Data, Dimension, IxDyn};

use crate::{Element, Tensor, TensorError};

/// A tensor with the array's shape and values (row-major).
pub fn from_array<T: Element + Send + 'static, S: Data<Elem = T>, D: Dimension>(
    array: &ArrayBase<S, D>,
) -> Tensor {
    let shape: Vec<i64> = array.shape().iter().map(|&d| d as i64).collect();
    // One copy, in row-major order; the tensor keeps the vector's memory.
    let values: Vec<T> = array.iter().copied().collect();
    Tensor::from_vec(&shape, values).expect("an array's shape matches its element count")
}

/// The tensor as an array of `T`, which must be its type.
pub fn to_array<T: Element>(tensor: &Tensor) -> Result<ArrayD<T>, TensorError> {
    let values = tensor.to_vec::<T>()?;
    let shape: Vec<usize> = tensor.shape().iter().map(|&d| d as usize).collect();
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), values)
        .expect("a tensor's shape matches its element count"))
}

/// Output `name` of `response` as an array of `T`, which must be its type.
///
/// ```
/// use ndarray::array;
/// use serving_client::array::output_array;
/// use serving_client::{InferResponse, NamedTensor, Tensor};
///
/// let response = InferResponse {
///     outputs: vec![NamedTensor::new("y", Tensor::from_slice(&[2], &[1f32, 2.0])?)],
///     ..Default::default()
/// };
/// assert_eq!(output_array::<f32>(&response, "y")?, array![1.0f32, 2.0].into_dyn());
/// assert!(output_array::<f32>(&response, "z").is_err());
/// # Ok::<(), serving_client::TensorError>(())
/// ```
pub fn output_array<T: Element>(
    response: &crate::InferResponse,
    name: &str,
) -> Result<ArrayD<T>, TensorError> {
    let tensor = response.tensor(name).ok_or_else(|| TensorError::NoOutput {
        name: name.to_owned(),
        present: response.outputs.iter().map(|o| o.name.clone()).collect(),
    })?;
    to_array(tensor)
}
