//! The client's terminal during `weft exec -t`: its window size, and raw mode on stdin.

use std::io::IsTerminal;

/// The terminal's rows and columns, when stdout is one.
pub(crate) fn window_size() -> (u32, u32) {
    let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes a winsize to the pointer.
    if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut size) } == 0 {
        (size.ws_row.into(), size.ws_col.into())
    } else {
        (0, 0)
    }
}

/// Puts the terminal on stdin in raw mode while alive (keys go to the container's terminal as
/// they are typed), and restores it when dropped.
pub(crate) struct RawMode(Option<libc::termios>);

impl RawMode {
    /// Raw mode on stdin's terminal; does nothing when stdin is not one.
    pub(crate) fn enter() -> RawMode {
        if !std::io::stdin().is_terminal() {
            return RawMode(None);
        }
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return RawMode(None);
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            libc::tcsetattr(0, libc::TCSANOW, &raw);
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the attributes saved by enter().
            unsafe { libc::tcsetattr(0, libc::TCSANOW, saved) };
        }
    }
}
