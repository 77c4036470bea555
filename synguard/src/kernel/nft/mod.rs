//! synguard's nftables table: untracked SYNs and cookie ACKs go to synproxy, which opens the
//! real connection to the local listener; applied by `nft -j -f -` as one atomic transaction.

pub mod events;
pub mod io;
mod rules;
pub mod table;
