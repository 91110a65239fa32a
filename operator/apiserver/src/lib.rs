//! Dev control plane.
