//! The daemon's run: start-up and shutdown in order, the state files and locks, reloads, the
//! auto controller, the watches for deleted interfaces and for changes to the nftables table,
//! systemd notifications and `detach`.

pub mod auto;
pub mod control;
pub mod detach;
pub mod lifecycle;
pub mod notify;
pub mod state;
pub mod table_watch;
pub mod watch;
