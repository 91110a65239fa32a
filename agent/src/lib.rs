//! Quiver node agent.
