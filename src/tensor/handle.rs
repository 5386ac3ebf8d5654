//! The tensor handle itself: what a [`Tensor`] holds and how crate code builds and reads one.
//!
//! Owns [`Tensor`]'s representation (shape, dtype, device and [`Kind`]: a write-once buffer with
//! its producer's position, or a name for a value of a graph being captured). It issues nothing:
//! the op methods in `tensor` go through `dispatch`; `graph` and `dispatch` build tensors here.

use std::fmt;
use std::sync::Arc;

use super::storage::{Buffer, Data};
use crate::device::Device;
use crate::dtype::DType;
use crate::ops::op::Meta;
use crate::runtime::{Position, runtime};

/// A cheap, immutable handle to an n-dimensional array on the streams.
///
/// Every op returns a new tensor at once (R3.1): the work is queued on the calling thread's
/// current stream and runs asynchronously. Only [`to_vec_f32`](Tensor::to_vec_f32) and
/// [`synchronize`](crate::synchronize) wait. Tensors are never written after they are produced
/// (R3.7), so clones can be shared freely across threads.
///
/// ```
/// use tagstream::{DType, Tensor};
/// let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2], DType::F16)?;
/// let b = Tensor::full(&[2, 2], 0.5, DType::F16)?;
/// let c = a.matmul(&b)?.relu()?;
/// assert_eq!(c.to_vec_f32()?, vec![1.5, 1.5, 3.5, 3.5]);
/// # Ok::<(), tagstream::Error>(())
/// ```
#[derive(Clone)]
pub struct Tensor {
    inner: Arc<Inner>,
}

struct Inner {
    shape: Vec<usize>,
    dtype: DType,
    device: Device,
    kind: Kind,
}

/// Where a tensor's elements are.
///
/// A tensor made while a graph is being captured is only a name for a value of that graph
/// (R4.1): it has no elements, and using it outside its capture is
/// [`Error::ForeignGraphValue`]. Everything else holds a real buffer.
pub(crate) enum Kind {
    Eager {
        buffer: Arc<Buffer>,
        /// The entry that writes `buffer`; `None` for host-built tensors, which are ready on
        /// every stream (R3.6).
        producer: Option<Arc<Position>>,
    },
    Graph {
        /// The capture that made it.
        graph: u64,
        /// The value's index in that graph.
        value: usize,
        /// The name of the entry that writes it, for error messages.
        op: &'static str,
    },
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Tensor");
        d.field("shape", &self.inner.shape)
            .field("dtype", &self.inner.dtype)
            .field("device", &self.inner.device);
        match &self.inner.kind {
            Kind::Eager { producer: None, .. } => d.field("producer", &"host"),
            Kind::Eager {
                producer: Some(p), ..
            } => d.field(
                "producer",
                &format_args!(
                    "{} (stream \"{}\", entry {})",
                    p.op,
                    runtime().stream_tag(p.stream),
                    p.seq
                ),
            ),
            Kind::Graph { graph, value, op } => d.field(
                "producer",
                &format_args!("{op} (value {value} of graph #{graph})"),
            ),
        };
        d.finish()
    }
}

impl Tensor {
    /// A ready tensor made from host data (ready on every stream, R3.6).
    pub(crate) fn host(shape: &[usize], data: Data) -> Tensor {
        Tensor {
            inner: Arc::new(Inner {
                shape: shape.to_vec(),
                dtype: data.dtype(),
                device: Device::Cpu,
                kind: Kind::Eager {
                    buffer: Arc::new(Buffer::ready(data)),
                    producer: None,
                },
            }),
        }
    }

    /// The shape. Never blocks.
    pub fn shape(&self) -> &[usize] {
        &self.inner.shape
    }

    /// The dtype. Never blocks.
    pub fn dtype(&self) -> DType {
        self.inner.dtype
    }

    pub(crate) fn handle_device(&self) -> Device {
        self.inner.device
    }

    /// Shape and dtype, what op validation needs.
    pub(crate) fn meta(&self) -> Meta<'_> {
        (&self.inner.shape, self.inner.dtype)
    }

    /// Where the elements are (a buffer, or a value of a graph being captured).
    pub(crate) fn kind(&self) -> &Kind {
        &self.inner.kind
    }

    /// A tensor with a ready buffer or one that `producer` fills; it lives on the buffer's
    /// device.
    pub(crate) fn from_buffer(
        shape: Vec<usize>,
        dtype: DType,
        buffer: Arc<Buffer>,
        producer: Option<Arc<Position>>,
    ) -> Tensor {
        Tensor {
            inner: Arc::new(Inner {
                shape,
                dtype,
                device: buffer.device(),
                kind: Kind::Eager { buffer, producer },
            }),
        }
    }

    /// A name for value `value` of the graph being captured (R4.1).
    pub(crate) fn graph_value(
        shape: Vec<usize>,
        dtype: DType,
        device: Device,
        graph: u64,
        value: usize,
        op: &'static str,
    ) -> Tensor {
        Tensor {
            inner: Arc::new(Inner {
                shape,
                dtype,
                device,
                kind: Kind::Graph { graph, value, op },
            }),
        }
    }

    /// A new handle on the same elements with another shape of the same element count, the
    /// same row-major order (a copy-free `reshape`): an eager tensor shares its buffer and
    /// producer, a graph value stays the same value of its graph. Readers of a buffer take its
    /// elements flat, so nothing downstream depends on which shape a handle gives them.
    pub(crate) fn with_shape(&self, shape: Vec<usize>) -> Tensor {
        let kind = match &self.inner.kind {
            Kind::Eager { buffer, producer } => Kind::Eager {
                buffer: buffer.clone(),
                producer: producer.clone(),
            },
            Kind::Graph { graph, value, op } => Kind::Graph {
                graph: *graph,
                value: *value,
                op,
            },
        };
        Tensor {
            inner: Arc::new(Inner {
                shape,
                dtype: self.inner.dtype,
                device: self.inner.device,
                kind,
            }),
        }
    }

    /// Whether two handles denote the same tensor.
    pub(crate) fn same(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::scope::stream_switch;
    use crate::tensor::Tensor;

    /// A tensor's `Debug` names its producer's stream by tag, as every message does.
    #[test]
    fn debug_names_the_stream_by_tag() {
        let x = Tensor::full(&[2], 1.0, DType::F32).unwrap();
        assert!(format!("{x:?}").contains("producer: \"host\""), "{x:?}");
        let y = {
            let _s = stream_switch("handle-debug-side").unwrap();
            x.exp().unwrap()
        };
        let shown = format!("{y:?}");
        assert!(
            shown.contains("exp (stream \"handle-debug-side\", entry 1)")
                && shown.contains("device: Cpu"),
            "{shown}"
        );
    }
}
