//! The daemon's run: start-up and shutdown in order, the state files and locks, reloads, the
//! auto controller, the watch for deleted interfaces, systemd notifications and `detach`.

pub mod auto;
pub mod control;
pub mod detach;
pub mod lifecycle;
pub mod notify;
pub mod state;
pub mod watch;
