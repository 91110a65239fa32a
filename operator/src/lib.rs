//! Quiver operator.
