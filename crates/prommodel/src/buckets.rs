//! Histogram bucket schemes and their bounds.

/// The most finite buckets a scheme may have: more is a mistake, and costs memory per series.
pub const MAX_BUCKETS: u32 = 1_000;

/// Prometheus' default histogram bounds, used when a distribution names none.
pub const DEFAULT_BOUNDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram's bucket scheme (Istio's `buckets` param).
#[derive(Clone, Debug, PartialEq)]
pub enum Buckets {
    /// `explicit_buckets.bounds`: exactly these upper bounds (strictly increasing, finite).
    Explicit(Vec<f64>),
    /// `linear_buckets`: `num_finite_buckets + 1` bounds: `offset`, then each adds `width`.
    Linear {
        /// Finite buckets (1 to [`MAX_BUCKETS`]).
        num_finite_buckets: u32,
        /// Distance between bounds (positive).
        width: f64,
        /// The first bound.
        offset: f64,
    },
    /// `exponential_buckets`: `num_finite_buckets + 1` bounds: `scale`, then each multiplies
    /// by `growth_factor`.
    Exponential {
        /// Finite buckets (1 to [`MAX_BUCKETS`]).
        num_finite_buckets: u32,
        /// Ratio between bounds (greater than 1).
        growth_factor: f64,
        /// The first bound (positive).
        scale: f64,
    },
}

impl Buckets {
    /// Prometheus' default bounds ([`DEFAULT_BOUNDS`]).
    pub const DEFAULT_BOUNDS: [f64; 11] = DEFAULT_BOUNDS;

    /// The upper bounds, ascending (the `+Inf` bucket is implied). The scheme's parameters
    /// are taken as they are; [`check_bounds`] says whether the result is usable.
    pub fn bounds(&self) -> Vec<f64> {
        match self {
            Buckets::Explicit(b) => b.clone(),
            Buckets::Linear {
                num_finite_buckets,
                width,
                offset,
            } => repeated(*offset, *num_finite_buckets, |b| b + width),
            Buckets::Exponential {
                num_finite_buckets,
                growth_factor,
                scale,
            } => repeated(*scale, *num_finite_buckets, |b| b * growth_factor),
        }
    }
}

/// `n + 1` bounds from `first`, each the step applied to the one before: Mixer's Prometheus
/// client built linear and exponential bounds by repeated addition and multiplication, and the
/// last digit of such a bound (`0.7999999999999999`, not `0.8`) is part of the `le` label.
fn repeated(first: f64, n: u32, step: impl Fn(f64) -> f64) -> Vec<f64> {
    std::iter::successors(Some(first), |b| Some(step(*b)))
        .take(n as usize + 1)
        .collect()
}

/// Checks that `bounds` can make a histogram: at least one, all finite, strictly increasing.
pub fn check_bounds(bounds: &[f64]) -> Result<(), BucketError> {
    if bounds.is_empty() {
        return Err(BucketError::Empty);
    }
    for (i, &b) in bounds.iter().enumerate() {
        if !b.is_finite() {
            return Err(BucketError::NotFinite { index: i, bound: b });
        }
        if i > 0 && bounds[i - 1] >= b {
            return Err(BucketError::NotIncreasing {
                index: i,
                previous: bounds[i - 1],
                bound: b,
            });
        }
    }
    Ok(())
}

/// Bounds that cannot make a histogram.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BucketError {
    /// No bounds at all.
    #[error("explicit buckets need at least one bound")]
    Empty,
    /// A bound is infinite or NaN (or a generated bound overflowed).
    #[error("bucket bound {index} is {bound}, not a finite number")]
    NotFinite {
        /// Position among the bounds.
        index: usize,
        /// The bound.
        bound: f64,
    },
    /// A bound is not greater than the one before it.
    #[error("bucket bound {index} ({bound}) is not greater than the one before it ({previous})")]
    NotIncreasing {
        /// Position among the bounds.
        index: usize,
        /// The bound before it.
        previous: f64,
        /// The bound.
        bound: f64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_bounds() {
        let linear = Buckets::Linear {
            num_finite_buckets: 3,
            width: 10.0,
            offset: 1.0,
        };
        assert_eq!(linear.bounds(), vec![1.0, 11.0, 21.0, 31.0]);
        let exp = Buckets::Exponential {
            num_finite_buckets: 2,
            growth_factor: 10.0,
            scale: 0.5,
        };
        assert_eq!(exp.bounds(), vec![0.5, 5.0, 50.0]);
        assert_eq!(Buckets::Explicit(vec![1.0]).bounds(), vec![1.0]);
        assert_eq!(check_bounds(&DEFAULT_BOUNDS), Ok(()));
    }

    #[test]
    fn bad_bounds() {
        assert_eq!(check_bounds(&[]), Err(BucketError::Empty));
        assert_eq!(
            check_bounds(&[1.0, 1.0]),
            Err(BucketError::NotIncreasing {
                index: 1,
                previous: 1.0,
                bound: 1.0
            })
        );
        let overflow = Buckets::Exponential {
            num_finite_buckets: 1000,
            growth_factor: 1e300,
            scale: 1.0,
        };
        assert_eq!(
            check_bounds(&overflow.bounds()),
            Err(BucketError::NotFinite {
                index: 2,
                bound: f64::INFINITY
            })
        );
        // A width lost in the offset's rounding makes equal bounds.
        let flat = Buckets::Linear {
            num_finite_buckets: 1,
            width: 1.0,
            offset: 1e20,
        };
        assert_eq!(
            check_bounds(&flat.bounds()),
            Err(BucketError::NotIncreasing {
                index: 1,
                previous: 1e20,
                bound: 1e20
            })
        );
    }
}
