//! Float to integer conversions in one place.

/// `x` rounded toward zero into `0..=u64::MAX` (NaN gives 0). Rust's `as`
/// saturates float-to-int conversions, which is exactly what is wanted
/// for counts and durations computed in floating point.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn f64_to_u64(x: f64) -> u64 {
    x as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates() {
        assert_eq!(f64_to_u64(-3.0), 0);
        assert_eq!(f64_to_u64(f64::NAN), 0);
        assert_eq!(f64_to_u64(2.9), 2);
        assert_eq!(f64_to_u64(1e30), u64::MAX);
    }
}
