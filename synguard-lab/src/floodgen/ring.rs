//! The two AF_PACKET senders: a `PACKET_TX_RING` (TPACKET_V2) and `sendmmsg`, both with the
//! qdisc bypassed, frames varied in user space.

use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context as _, Result, bail, ensure};

use super::{FloodSpec, Layout, Pacer};
use crate::craft::XorShift;

const PACKET_VERSION: libc::c_int = 10;
const PACKET_TX_RING: libc::c_int = 13;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const TPACKET_V2: libc::c_int = 1;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 4;
/// `TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`: where a TPACKET_V2 frame's data starts.
const TPACKET2_DATA: usize = 32;
const RING_FRAME: usize = 2048;
const RING_FRAMES: usize = 4096;
const BURST: usize = 64;

fn check(ret: libc::c_int, what: &str) -> Result<()> {
    if ret < 0 {
        return Err(std::io::Error::last_os_error()).context(what.to_owned());
    }
    Ok(())
}

fn set_option<T>(fd: &OwnedFd, name: libc::c_int, value: &T, what: &str) -> Result<()> {
    // SAFETY: `value` points to a live T whose size is passed.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            name,
            std::ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    check(ret, what)
}

/// A send-only AF_PACKET socket bound to `ifindex`, qdisc bypassed.
fn socket(ifindex: u32) -> Result<(OwnedFd, libc::sockaddr_ll)> {
    // SAFETY: plain syscall.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    check(raw, "creating an AF_PACKET socket")?;
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    set_option(&fd, PACKET_QDISC_BYPASS, &one, "PACKET_QDISC_BYPASS")?;
    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = i32::try_from(ifindex)?;
    addr.sll_halen = 6;
    // SAFETY: `addr` is a sockaddr_ll of the size passed.
    let ret = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    check(ret, "binding the AF_PACKET socket")?;
    Ok((fd, addr))
}

/// A mapped TX ring; unmapped on drop.
struct Ring {
    base: *mut u8,
    len: usize,
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

pub(super) fn tx_ring(
    spec: &FloodSpec,
    template: &[u8],
    layout: &Layout,
    ifindex: u32,
    stop: &AtomicBool,
) -> Result<u64> {
    ensure!(
        template.len() + TPACKET2_DATA <= RING_FRAME,
        "frame too long"
    );
    let (fd, _) = socket(ifindex)?;
    set_option(&fd, PACKET_VERSION, &TPACKET_V2, "PACKET_VERSION")?;
    let req = libc::tpacket_req {
        tp_block_size: 4096 * 16,
        tp_block_nr: (RING_FRAMES * RING_FRAME / (4096 * 16)) as u32,
        tp_frame_size: RING_FRAME as u32,
        tp_frame_nr: RING_FRAMES as u32,
    };
    set_option(&fd, PACKET_TX_RING, &req, "PACKET_TX_RING")?;
    let len = RING_FRAMES * RING_FRAME;
    // SAFETY: maps the ring the kernel just allocated for this socket.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error()).context("mapping the TX ring");
    }
    let ring = Ring {
        base: base.cast(),
        len,
    };
    let mut rng = XorShift::seeded();
    let deadline = Instant::now() + spec.duration;
    let pacer = Pacer::new(spec.rate);
    let mut sent = 0u64;
    let mut slot = 0usize;
    while sent < spec.count && Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let n = (BURST as u64).min(spec.count - sent) as usize;
        for _ in 0..n {
            // SAFETY: slot < RING_FRAMES, so the frame lies inside the mapping; the kernel
            // owns a slot only while its status says SEND_REQUEST/SENDING.
            unsafe {
                let frame = ring.base.add(slot * RING_FRAME);
                let status = frame.cast::<u32>();
                while std::ptr::read_volatile(status) & !TP_STATUS_WRONG_FORMAT
                    != TP_STATUS_AVAILABLE
                {
                    // A full ring: let the kernel send.
                    libc::send(fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT);
                }
                let data = std::slice::from_raw_parts_mut(frame.add(TPACKET2_DATA), template.len());
                data.copy_from_slice(template);
                layout.randomize(data, &mut rng);
                // tp_len
                std::ptr::write_volatile(frame.add(4).cast::<u32>(), template.len() as u32);
                std::sync::atomic::fence(Ordering::Release);
                std::ptr::write_volatile(status, TP_STATUS_SEND_REQUEST);
            }
            slot = (slot + 1) % RING_FRAMES;
        }
        // SAFETY: a send with no data flushes the ring.
        let ret = unsafe { libc::send(fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT) };
        if ret < 0 {
            let err = std::io::Error::last_os_error();
            if !matches!(err.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) {
                bail!("flushing the TX ring: {err}");
            }
        }
        sent += n as u64;
        pacer.wait(sent);
    }
    Ok(sent)
}

pub(super) fn sendmmsg(
    spec: &FloodSpec,
    template: &[u8],
    layout: &Layout,
    ifindex: u32,
    stop: &AtomicBool,
) -> Result<u64> {
    let (fd, addr) = socket(ifindex)?;
    let mut frames = vec![template.to_vec(); BURST];
    let mut rng = XorShift::seeded();
    let deadline = Instant::now() + spec.duration;
    let pacer = Pacer::new(spec.rate);
    let mut sent = 0u64;
    while sent < spec.count && Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let n = (BURST as u64).min(spec.count - sent) as usize;
        let mut iovs: Vec<libc::iovec> = frames[..n]
            .iter_mut()
            .map(|f| {
                layout.randomize(f, &mut rng);
                libc::iovec {
                    iov_base: f.as_mut_ptr().cast(),
                    iov_len: f.len(),
                }
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: msghdr is plain data; all-zero is valid.
                let mut msg: libc::mmsghdr = unsafe { zeroed() };
                msg.msg_hdr.msg_name = std::ptr::from_ref(&addr).cast_mut().cast();
                msg.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                msg.msg_hdr.msg_iov = iov;
                msg.msg_hdr.msg_iovlen = 1;
                msg
            })
            .collect();
        // SAFETY: `msgs` points to live iovecs and frames for the call.
        let ret = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
        if ret < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENOBUFS) {
                bail!("sendmmsg: {err}");
            }
        } else {
            sent += ret as u64;
        }
        pacer.wait(sent);
    }
    Ok(sent)
}
