//! Quiver custom resource types.
