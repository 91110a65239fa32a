//! Raw terminal mode for the console, undone when the guard drops (every return, error and
//! unwinding panic).

use std::io::IsTerminal as _;

use nix::sys::termios::{self, SetArg, Termios};

/// The terminal's settings before raw mode; restores them on drop.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Raw mode on stdin when it is a terminal; `None` for a pipe or file (nothing to undo).
    ///
    /// # Errors
    /// stdin is a terminal whose settings cannot be read or changed.
    pub fn enter() -> std::io::Result<Option<Self>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let saved = termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw)?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}
