//! [`Tensor`]: the dense row-major `f32` tensor every decoder here produces and every encoder
//! writes, and the checks the decoders share (a body that is there, a tensor with values).

use crate::HandlerError;

/// A dense row-major `f32` tensor.
///
/// # Examples
///
/// ```
/// use plinth_codec::Tensor;
///
/// let t = Tensor::new(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![2, 3]).unwrap();
/// assert_eq!((t.rows(), t.row_len()), (2, 3));
/// assert_eq!(t.data[3], 4.0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The values, row-major; `data.len()` is the product of `shape`.
    pub data: Vec<f32>,
    /// The size of each dimension; `[]` for a scalar.
    pub shape: Vec<usize>,
}

impl Tensor {
    /// A tensor of `shape` holding `data`; fails if the sizes disagree.
    ///
    /// # Examples
    ///
    /// ```
    /// use plinth_codec::Tensor;
    ///
    /// let scalar = Tensor::new(vec![7.0], vec![]).unwrap();
    /// assert_eq!(scalar.shape, Vec::<usize>::new());
    /// let e = Tensor::new(vec![1.0; 5], vec![2, 3]).unwrap_err();
    /// assert_eq!(e.message(), "a tensor of shape [2, 3] holds 6 values, got 5");
    /// ```
    pub fn new(data: Vec<f32>, shape: Vec<usize>) -> Result<Self, HandlerError> {
        // A product that overflows (with no dimension 0) holds more values than any `data`.
        let expected = if shape.contains(&0) {
            Some(0)
        } else {
            shape
                .iter()
                .try_fold(1usize, |count, &d| count.checked_mul(d))
        };
        if expected != Some(data.len()) {
            let expected = expected.map_or_else(|| "more".to_owned(), |n| n.to_string());
            return Err(HandlerError::bad_request(format!(
                "a tensor of shape {shape:?} holds {expected} values, got {}",
                data.len()
            )));
        }
        Ok(Self { data, shape })
    }

    /// The tensor viewed as a matrix: a vector becomes one row, a matrix stays as it is.
    /// Anything else is a [`HandlerError::BadRequest`].
    ///
    /// # Examples
    ///
    /// ```
    /// use plinth_codec::Tensor;
    ///
    /// let row = Tensor::new(vec![1.0, 2.0], vec![2]).unwrap().into_matrix().unwrap();
    /// assert_eq!(row.shape, vec![1, 2]);
    /// assert!(Tensor::new(vec![0.0; 8], vec![2, 2, 2]).unwrap().into_matrix().is_err());
    /// ```
    pub fn into_matrix(self) -> Result<Self, HandlerError> {
        match self.shape.len() {
            1 => Ok(Self {
                shape: vec![1, self.shape[0]],
                data: self.data,
            }),
            2 => Ok(self),
            n => Err(HandlerError::bad_request(format!(
                "expected a vector or a matrix, got {n} dimensions (shape {:?})",
                self.shape
            ))),
        }
    }

    /// The size of the first dimension (1 for a scalar).
    ///
    /// # Examples
    ///
    /// ```
    /// let t = plinth_codec::decode_csv(b"1,2\n3,4\n5,6\n").unwrap();
    /// assert_eq!(t.rows(), 3);
    /// ```
    #[inline]
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// The number of values per row: the product of all dimensions but the first.
    ///
    /// # Examples
    ///
    /// ```
    /// let t = plinth_codec::Tensor::new(vec![0.0; 24], vec![2, 3, 4]).unwrap();
    /// assert_eq!(t.row_len(), 12);
    /// ```
    #[inline]
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// The values of each row (see [`Tensor::rows`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use plinth_codec::Tensor;
    ///
    /// let scores = Tensor::new(vec![0.1, 0.9, 0.8, 0.2], vec![2, 2]).unwrap();
    /// let best: Vec<usize> = scores.iter_rows().map(|r| usize::from(r[1] > r[0])).collect();
    /// assert_eq!(best, vec![1, 0]);
    /// ```
    #[inline]
    pub fn iter_rows(&self) -> impl Iterator<Item = &[f32]> + '_ {
        let len = self.row_len().max(1);
        let rows = if self.shape.is_empty() {
            1
        } else {
            self.rows()
        };
        self.data.chunks(len).take(rows)
    }
}

/// A [`HandlerError::BadRequest`] unless `body` holds something besides whitespace.
#[inline]
pub(crate) fn require_body(body: &[u8]) -> Result<(), HandlerError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(HandlerError::bad_request("the request body is empty"));
    }
    Ok(())
}

/// `tensor`, or a [`HandlerError::BadRequest`] if it holds no values.
pub(crate) fn require_values(tensor: Tensor) -> Result<Tensor, HandlerError> {
    if tensor.data.is_empty() {
        return Err(HandlerError::bad_request(format!(
            "the request holds no values (shape {:?})",
            tensor.shape
        )));
    }
    Ok(tensor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_views() {
        let t = Tensor::new(vec![1.0, 2.0], vec![2])
            .unwrap()
            .into_matrix()
            .unwrap();
        assert_eq!(t.shape, vec![1, 2]);
        assert_eq!(t.iter_rows().collect::<Vec<_>>(), vec![&[1.0, 2.0][..]]);
        assert!(Tensor::new(vec![1.0; 8], vec![2, 2, 2])
            .unwrap()
            .into_matrix()
            .is_err());
        assert!(Tensor::new(vec![1.0; 3], vec![2, 2]).is_err());
        // A shape whose product overflows is refused, not a panic.
        assert!(Tensor::new(vec![], vec![usize::MAX, 2, 0]).is_ok());
        assert!(Tensor::new(vec![1.0], vec![usize::MAX, 2]).is_err());
    }
}
