//! The kernel around the datapath: synguard's nftables table and its I/O, the sysctls and their
//! tuning, the kernel's own view of its handshakes, netlink dumps and the process's privileges.

pub mod kernel_view;
pub mod netlink;
pub mod nft;
pub mod privileges;
pub mod sysctl;
pub mod tuning;
