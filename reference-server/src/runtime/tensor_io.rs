//! Tensors into and out of ONNX Runtime sessions, and the library's version.
//!
//! The one module with `unsafe`: ONNX Runtime has no safe constructor for a
//! tensor over borrowed bytes of a run-time element type, nor a raw-bytes
//! reader for outputs. Each block states why it is sound.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::path::Path;

use bytes::Bytes;
use ort::memory::{Allocator, MemoryInfo};
use ort::session::SessionInputValue;
use ort::value::{
    DynTensor, DynTensorValueType, DynValue, PrimitiveTensorElementType, Shape,
    TensorElementType as E, TensorRefMut, ValueType,
};
use serving_proto::{DataType, Tensor, TensorData};

/// The full version string (`1.24.4`) of an ONNX Runtime library, read from
/// its `OrtGetApiBase().GetVersionString()`.
pub fn library_version(path: &Path) -> Option<String> {
    // SAFETY: loading the library runs its initialisers, which is what using
    // ONNX Runtime requires anyway; a second load of an already loaded file
    // shares the handle.
    let lib = unsafe { libloading::Library::new(path) }.ok()?;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release.
    let get: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
        unsafe { lib.get(b"OrtGetApiBase") }.ok()?;
    // SAFETY: the function takes no arguments and returns a static table.
    let base = unsafe { get() };
    if base.is_null() {
        return None;
    }
    // SAFETY: `base` is non-null and points at the static API base, whose
    // `GetVersionString` returns a static NUL-terminated string.
    let text = unsafe { std::ffi::CStr::from_ptr(((*base).GetVersionString)()) };
    Some(text.to_string_lossy().into_owned())
}

/// The tensor type of an ONNX element type; `None` for the types the
/// protocols cannot carry (complex, float8, 4-bit, ...).
pub fn data_type(e: E) -> Option<DataType> {
    Some(match e {
        E::Bool => DataType::Bool,
        E::Int8 => DataType::Int8,
        E::Int16 => DataType::Int16,
        E::Int32 => DataType::Int32,
        E::Int64 => DataType::Int64,
        E::Uint8 => DataType::Uint8,
        E::Uint16 => DataType::Uint16,
        E::Uint32 => DataType::Uint32,
        E::Uint64 => DataType::Uint64,
        E::Float16 => DataType::Fp16,
        E::Bfloat16 => DataType::Bf16,
        E::Float32 => DataType::Fp32,
        E::Float64 => DataType::Fp64,
        E::String => DataType::String,
        _ => return None,
    })
}

fn view<'a, T: PrimitiveTensorElementType + std::fmt::Debug>(
    raw: &'a Bytes,
    shape: &[i64],
) -> Result<Option<SessionInputValue<'a>>, String> {
    if raw.is_empty() || !(raw.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return Ok(None);
    }
    // SAFETY: the bytes are host memory, aligned for T (checked above), and
    // exactly element count x size_of::<T>() long (a `Tensor` guarantees its
    // length matches its shape and type, and the caller checked the type).
    // ONNX Runtime only reads inputs, and the returned value borrows `raw`
    // for 'a, so the memory outlives the tensor.
    let t: TensorRefMut<'a, T> = unsafe {
        TensorRefMut::from_raw(
            MemoryInfo::default(),
            raw.as_ptr() as *mut c_void,
            Shape::new(shape.iter().copied()),
        )
    }
    .map_err(|e| e.to_string())?;
    Ok(Some(t.into()))
}

fn copied(e: E, shape: &[i64], raw: &[u8]) -> Result<DynTensor, String> {
    let mut t = DynTensor::new(&Allocator::default(), e, shape).map_err(|e| e.to_string())?;
    let n = t.size().unwrap_or(0);
    if n != raw.len() {
        return Err(format!(
            "expected {n} bytes of tensor data, got {}",
            raw.len()
        ));
    }
    if n > 0 {
        // SAFETY: `t` owns a freshly allocated host buffer of exactly `n`
        // bytes (its `size()`), and `raw` holds `n` bytes; they cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(raw.as_ptr(), t.data_ptr_mut().cast::<u8>(), n) };
    }
    Ok(t)
}

/// An input value for ONNX element type `e` over the tensor's bytes:
/// borrowed without a copy when aligned, copied otherwise. BOOL bytes are
/// normalised to 0/1.
pub fn input_value<'a>(e: E, t: &'a Tensor) -> Result<SessionInputValue<'a>, String> {
    let shape = t.shape();
    match t.data() {
        TensorData::Elements(elements) => {
            let texts = elements
                .iter()
                .map(|b| {
                    String::from_utf8(b.to_vec()).map_err(|_| {
                        "a STRING/BYTES element is not valid UTF-8, which ONNX Runtime string tensors require".to_string()
                    })
                })
                .collect::<Result<Vec<String>, String>>()?;
            let value = ort::value::Tensor::from_string_array((shape.to_vec(), texts.as_slice()))
                .map_err(|e| e.to_string())?;
            Ok(value.into())
        }
        TensorData::Raw(raw) => {
            let viewed = match e {
                E::Float32 => view::<f32>(raw, shape)?,
                E::Float64 => view::<f64>(raw, shape)?,
                E::Int8 => view::<i8>(raw, shape)?,
                E::Uint8 => view::<u8>(raw, shape)?,
                E::Int16 => view::<i16>(raw, shape)?,
                E::Uint16 => view::<u16>(raw, shape)?,
                E::Int32 => view::<i32>(raw, shape)?,
                E::Uint32 => view::<u32>(raw, shape)?,
                E::Int64 => view::<i64>(raw, shape)?,
                E::Uint64 => view::<u64>(raw, shape)?,
                E::Float16 => view::<half::f16>(raw, shape)?,
                E::Bfloat16 => view::<half::bf16>(raw, shape)?,
                E::Bool if raw.iter().all(|&b| b <= 1) => view::<bool>(raw, shape)?,
                E::Bool => {
                    let normal: Vec<u8> = raw.iter().map(|&b| u8::from(b != 0)).collect();
                    return Ok(copied(e, shape, &normal)?.into());
                }
                _ => None,
            };
            match viewed {
                Some(v) => Ok(v),
                None => Ok(copied(e, shape, raw)?.into()),
            }
        }
    }
}

/// Reads a session output into a tensor: the output value becomes the
/// tensor's bytes without a copy (copied only if it aliases one of
/// `inputs`). ONNX strings become `String` tensors.
pub fn output_tensor(v: DynValue, inputs: &[&Tensor]) -> Result<Tensor, String> {
    let (e, shape) = match v.dtype() {
        ValueType::Tensor { ty, shape, .. } => (*ty, shape.to_vec()),
        other => return Err(format!("the model produced a non-tensor output ({other})")),
    };
    let dtype = data_type(e)
        .ok_or_else(|| format!("the model produced an output of unsupported element type {e}"))?;
    if e == E::String {
        let (_, texts) = v.try_extract_strings().map_err(|e| e.to_string())?;
        let elements = texts
            .into_iter()
            .map(|s| Bytes::from(s.into_bytes()))
            .collect();
        return Tensor::from_elements(dtype, shape, elements).map_err(|e| e.to_string());
    }
    let (p, n) = {
        let t = v
            .view()
            .downcast::<DynTensorValueType>()
            .map_err(|e| e.to_string())?;
        if !t.memory_info().is_cpu_accessible() {
            return Err("the output is not in host memory".into());
        }
        (t.data_ptr().cast::<u8>(), t.size().unwrap_or(0))
    };
    // An output that lies in an input's memory (a runtime that passes a
    // borrowed input through) must be copied: the input is the request's
    // and may be gone before the reply is.
    let start = p as usize;
    let aliases_input = inputs.iter().filter_map(|t| t.raw()).any(|raw| {
        let r = raw.as_ptr() as usize;
        start < r + raw.len() && r < start + n
    });
    let bytes = if n == 0 || p.is_null() {
        Bytes::new()
    } else if aliases_input {
        // SAFETY: `n` bytes of host-accessible data at `p` (checked above),
        // valid while `v` lives: copied out now.
        Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(p, n) })
    } else {
        // The tensor's bytes become the reply's without a copy: the value
        // is owned by the `Bytes` and released with its last clone.
        Bytes::from_owner(OutputBytes {
            _value: v,
            ptr: p,
            len: n,
        })
    };
    Tensor::from_raw(dtype, shape, bytes).map_err(|e| e.to_string())
}

/// An ONNX Runtime output value seen as its bytes.
struct OutputBytes {
    /// Keeps the data alive (ONNX Runtime tensors hold their allocator).
    _value: DynValue,
    ptr: *const u8,
    len: usize,
}

// SAFETY: `DynValue` is Send and Sync, and the pointer is only read, as the
// value's own immutable data, while the value lives.
unsafe impl Send for OutputBytes {}
// SAFETY: as above; nothing mutates the data after the run.
unsafe impl Sync for OutputBytes {}

impl AsRef<[u8]> for OutputBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: ONNX Runtime reported `len` bytes of host-accessible
        // tensor data at `ptr` (checked in `output_tensor`); the value that
        // owns them lives as long as `self` and is never written again.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}
