//! The index ops of real models (design.md §1): [`Tensor::topk`], [`Tensor::gather`],
//! [`Tensor::scatter`] and [`Tensor::index_select`].
//!
//! Each validates on the host (`ops::op`) and issues through `dispatch` like every op. Index
//! tensors have dtype [`DType::I32`](crate::DType::I32); an index outside its dimension is found
//! by the kernel and fails the op's output (R3.12), never an out-of-bounds access.

use super::handle::Tensor;
use crate::dispatch;
use crate::error::Result;
use crate::ops::op::Op;

impl Tensor {
    /// The `k` largest values of each row over the last dimension, largest first, and their
    /// positions as an [`I32`](crate::DType::I32) tensor (torch's `topk`): ties keep the lower
    /// position first, and NaN counts as larger than every number. Both outputs have the input's
    /// shape with the last dimension `k`; the values are exact copies (a [`gather`](Tensor::gather)
    /// of the positions, issued after them on the current stream).
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    /// let x = Tensor::from_vec(vec![0.1, 0.7, 0.2, 0.7, 0.5, 0.4], &[2, 3], DType::F32)?;
    /// let (values, indices) = x.topk(2)?;
    /// assert_eq!(indices.dtype(), DType::I32);
    /// assert_eq!(indices.to_vec_f32()?, vec![1.0, 2.0, 0.0, 1.0]);
    /// assert_eq!(values.to_vec_f32()?, vec![0.7, 0.2, 0.7, 0.5]);
    /// assert!(x.topk(4).is_err()); // k larger than the last dimension
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) for a rank-0 tensor or `k` larger
    /// than the last dimension; [`Error::DTypeMismatch`](crate::Error::DTypeMismatch) for an
    /// `I32` tensor; [`Error::DataRace`](crate::Error::DataRace).
    pub fn topk(&self, k: usize) -> Result<(Tensor, Tensor)> {
        let indices = dispatch::op(|| Op::topk_indices(self.meta(), k), &[self])?;
        let last = self.shape().len() - 1;
        let values = self.gather(last, &indices)?;
        Ok((values, indices))
    }

    /// `out[.., j, ..] = self[.., index[.., j, ..], ..]` along `dim` (torch's `gather`): the
    /// output has `index`'s shape and `self`'s dtype. `index` is `I32`, of `self`'s rank, with
    /// `self`'s size in every dimension but `dim` (torch allows smaller; tagstream asks for
    /// equal). Works on every dtype; the values are exact copies.
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    /// let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2], DType::BF16)?;
    /// let ix = Tensor::from_vec(vec![1.0, 1.0, 0.0, 1.0], &[2, 2], DType::I32)?;
    /// assert_eq!(x.gather(1, &ix)?.to_vec_f32()?, vec![2.0, 2.0, 3.0, 4.0]);
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) (dim out of range, rank or sizes),
    /// [`Error::DTypeMismatch`](crate::Error::DTypeMismatch) for an index that is not `I32`,
    /// [`Error::DataRace`](crate::Error::DataRace). An index outside `0..self.shape()[dim]`
    /// fails the output with [`Error::ExecutionFailed`](crate::Error::ExecutionFailed) when it
    /// is read (R3.12).
    pub fn gather(&self, dim: usize, index: &Tensor) -> Result<Tensor> {
        dispatch::op(
            || Op::gather(self.meta(), dim, index.meta()),
            &[self, index],
        )
    }

    /// A copy of `self` with `src[.., j, ..]` written at `[.., index[.., j, ..], ..]` along
    /// `dim` (torch's out-of-place `scatter`). `index` is `I32` with `self`'s size in every
    /// dimension but `dim`; `src` has `index`'s shape and `self`'s dtype. Where `index` repeats
    /// a position, the element last in `index`'s row-major order wins, on every backend.
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    /// let z = Tensor::zeros(&[2, 4], DType::F32)?;
    /// let ix = Tensor::from_vec(vec![3.0, 0.0, 1.0, 1.0], &[2, 2], DType::I32)?;
    /// let w = Tensor::from_vec(vec![0.75, 0.25, 0.5, 0.9], &[2, 2], DType::F32)?;
    /// let dense = z.scatter(1, &ix, &w)?;
    /// assert_eq!(dense.to_vec_f32()?, vec![0.25, 0.0, 0.0, 0.75, 0.0, 0.9, 0.0, 0.0]);
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`gather`](Tensor::gather); also [`Error::ShapeMismatch`](crate::Error::ShapeMismatch)
    /// when `src` does not have `index`'s shape and
    /// [`Error::DTypeMismatch`](crate::Error::DTypeMismatch) when it has another dtype.
    pub fn scatter(&self, dim: usize, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        dispatch::op(
            || Op::scatter(self.meta(), dim, index.meta(), src.meta()),
            &[self, index, src],
        )
    }

    /// The slices of `self` at positions `index` along `dim` (torch's `index_select`; with
    /// `dim = 0` an embedding lookup): `index` is a 1-D `I32` tensor of `m` positions and the
    /// output is `self`'s shape with `dim` resized to `m`.
    ///
    /// ```
    /// use tagstream::{DType, Tensor};
    /// let table = Tensor::from_vec(vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5], &[3, 2], DType::F16)?;
    /// let tokens = Tensor::from_vec(vec![2.0, 0.0], &[2], DType::I32)?;
    /// let emb = table.index_select(0, &tokens)?;
    /// assert_eq!((emb.shape(), emb.to_vec_f32()?), (&[2, 2][..], vec![2.0, 2.5, 0.0, 0.5]));
    /// # Ok::<(), tagstream::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`gather`](Tensor::gather), with a 1-D index.
    pub fn index_select(&self, dim: usize, index: &Tensor) -> Result<Tensor> {
        dispatch::op(
            || Op::index_select(self.meta(), dim, index.meta()),
            &[self, index],
        )
    }
}
