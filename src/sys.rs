//! Thin wrappers over the syscalls the runtime does not wrap. Every `unsafe`
//! block of the crate's data plane lives here, one syscall each.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Moves up to `len` bytes from `from` to `to` without blocking; one of them must be a pipe.
/// `Ok(0)` from a socket means EOF; `WouldBlock` means wait for readiness.
#[inline]
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain syscall on caller-owned fds; null offsets are valid for
    // pipes and sockets; the kernel validates the fds.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Non-blocking recv(2) appending up to `max` bytes to `buf` (into its spare
/// capacity). `Ok(0)` means EOF; `WouldBlock` means wait for readiness.
pub fn recv_append(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    if len == 0 {
        // A zero-length recv returns 0, which would read as EOF.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "recv into a full buffer",
        ));
    }
    // SAFETY: the pointer and `len` describe spare capacity owned by `buf`,
    // valid for writes of `len` bytes; recv writes at most `len` bytes there.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), len, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (n as usize).min(len);
    // SAFETY: recv initialized the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Non-blocking send(2) without SIGPIPE; `WouldBlock` means wait for writability.
pub fn send(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is valid for reads of its length for the duration of the call.
    let n = unsafe {
        libc::send(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Whether an idle connection can carry a new request: the peer has not
/// closed it, it has no pending error, and no unexpected bytes are waiting
/// (recv with MSG_PEEK | MSG_DONTWAIT must say "would block").
pub fn idle_socket_ok(fd: RawFd) -> bool {
    let mut b = [0u8; 1];
    matches!(recv_peek(fd, &mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// TCP_DEFER_ACCEPT on a listening socket: accept(2) returns a connection
/// only once data arrived (or after about `secs` seconds).
pub fn set_defer_accept(fd: RawFd, secs: u32) -> io::Result<()> {
    let v = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    // SAFETY: `v` is a valid c_int for the duration of the call, and its size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// Non-blocking `recv(MSG_PEEK)`: what is queued, left queued. `Ok(0)` is
/// EOF; `WouldBlock` means nothing is pending.
pub fn recv_peek(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length; MSG_PEEK leaves the data queued.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A non-blocking, close-on-exec pipe: `(read end, write end)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid, writable array of two c_ints as pipe2 requires.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets a pipe's capacity (F_SETPIPE_SZ); returns the capacity the kernel granted.
pub fn set_pipe_size(fd: &OwnedFd, size: usize) -> io::Result<usize> {
    // SAFETY: fcntl on an fd we own; F_SETPIPE_SZ takes an int argument.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) })
        .map(|n| n as usize)
}

/// Current capacity of a pipe (F_GETPIPE_SZ).
pub fn pipe_size(fd: &OwnedFd) -> io::Result<usize> {
    // SAFETY: fcntl on an fd we own; F_GETPIPE_SZ takes no argument.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) }).map(|n| n as usize)
}

/// shutdown(SHUT_WR): sends FIN, keeps the read side open (half-close).
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown on a caller-owned socket fd; no memory is passed.
    cvt(unsafe { libc::shutdown(fd, libc::SHUT_WR) }).map(|_| ())
}

/// Shuts a socket down both ways (its owner still closes it).
pub fn shutdown_both(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown on a caller-owned socket fd; no memory is passed.
    cvt(unsafe { libc::shutdown(fd, libc::SHUT_RDWR) }).map(|_| ())
}

/// Puts a socket in non-blocking mode (FIONBIO: one syscall, unlike F_GETFL+F_SETFL).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    let mut on: libc::c_int = 1;
    // SAFETY: FIONBIO reads one c_int from the pointer, which is valid for the call.
    cvt(unsafe { libc::ioctl(fd, libc::FIONBIO, &mut on) }).map(|_| ())
}

/// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC: the new socket and the peer address.
pub fn accept(listener: RawFd) -> io::Result<(OwnedFd, SocketAddr)> {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage`/`len` are valid for writes and `len` holds the buffer size.
    let fd = cvt(unsafe {
        libc::accept4(
            listener,
            &mut storage as *mut _ as *mut libc::sockaddr,
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: accept4 returned a fresh fd that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = sockaddr_to_std(&storage).unwrap_or(SocketAddr::V4(SocketAddrV4::new(
        std::net::Ipv4Addr::UNSPECIFIED,
        0,
    )));
    Ok((owned, addr))
}

fn sockaddr_to_std(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: ss_family says the storage holds a sockaddr_in, which it is large enough for.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(a.sin_addr.s_addr).into(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: ss_family says the storage holds a sockaddr_in6, which it is large enough for.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Pending socket error (SO_ERROR), e.g. the outcome of a non-blocking connect.
pub fn take_socket_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err`/`len` are valid for writes; SO_ERROR writes one c_int.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err as *mut _ as *mut libc::c_void,
            &mut len,
        )
    })?;
    Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain old data; CPU_ZERO/CPU_SET write within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t and `cpu` is bounds-checked by CPU_SET.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 means the calling thread; `set` is valid for the given size.
    cvt(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) })
        .map(|_| ())
}

/// CPUs this process may run on (respects `taskset` and cgroup cpusets).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain old data; all-zero is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 = this thread; `set` is valid for writes of its size.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `set` was filled by sched_getaffinity; CPU_ISSET only reads it.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Raises RLIMIT_NOFILE's soft limit to its hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid rlimit; raising soft up to hard needs no privilege.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) })?;
        return Ok(want.rlim_cur);
    }
    Ok(lim.rlim_cur)
}

/// Ignores SIGPIPE so a write to a closed socket returns EPIPE instead of killing us.
pub fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN for SIGPIPE has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Makes a child started by `cmd` die with ringmesh: PR_SET_PDEATHSIG(SIGKILL)
/// between fork and exec, then a check that the parent has not already exited
/// (the signal would never come). Linux sends the death signal when the
/// *thread* that forked exits, so spawn from a thread that lives as long as
/// ringmesh (the control thread).
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let hook = move || -> io::Result<()> {
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only and is
        // async-signal-safe, as code between fork and exec must be.
        cvt(unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        })?;
        // SAFETY: getppid has no preconditions and is async-signal-safe.
        if unsafe { libc::getppid() } != parent {
            // No allocation here (not async-signal-safe after fork).
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec; it only makes the
    // two async-signal-safe syscalls above and allocates nothing.
    unsafe { cmd.pre_exec(hook) };
}

/// Sends `sig` to every process of the process group `pgid` (a child started
/// with `process_group(0)` leads its own group, so its children get it too).
pub fn kill_group(pgid: u32, sig: libc::c_int) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .ok()
        .filter(|&p| p > 1)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill takes integers only; a negative pid names a process group.
    cvt(unsafe { libc::kill(-pgid, sig) }).map(|_| ())
}

/// CLOCK_MONOTONIC in microseconds (sd_notify's `MONOTONIC_USEC`).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Most fds sent with one message (the kernel's SCM_MAX_FD is 253).
pub const MAX_FDS_PER_MESSAGE: usize = 64;

/// A connected pair of close-on-exec SOCK_SEQPACKET unix sockets: message
/// boundaries are kept, and a peer that exits reads as EOF.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is valid for writes of two c_ints.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair returned two fresh fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends `data` as one message with `fds` attached (SCM_RIGHTS).
pub fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many fds for one message",
        ));
    }
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    // u64 words: the control buffer must be aligned for cmsghdr.
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` zeroed, aligned bytes, enough for
        // one cmsghdr carrying `fd_bytes` of data (CMSG_SPACE); CMSG_FIRSTHDR is
        // non-null for that size, and CMSG_DATA points inside the buffer with
        // room for `fd_bytes`.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), fd_bytes);
        }
    }
    // SAFETY: `msg` points at `iov` (describing `data`) and `cbuf`, both alive for the call.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != data.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "message truncated",
        ));
    }
    Ok(())
}

/// Receives one message into `buf` and the fds attached to it (made
/// close-on-exec). `nonblocking`: `WouldBlock` instead of waiting.
/// `Ok((0, _))` means the peer closed.
pub fn recv_with_fds(
    sock: RawFd,
    buf: &mut [u8],
    nonblocking: bool,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe {
        libc::CMSG_SPACE((MAX_FDS_PER_MESSAGE * std::mem::size_of::<libc::c_int>()) as u32)
    } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let flags = libc::MSG_CMSG_CLOEXEC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    // SAFETY: `msg` describes `buf` and `cbuf`, both valid for writes of their lengths.
    let n = unsafe { libc::recvmsg(sock, &mut msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with well-formed cmsghdrs (at most
    // msg_controllen bytes); CMSG_FIRSTHDR/NXTHDR stay inside it, and an
    // SCM_RIGHTS payload is (cmsg_len - CMSG_LEN(0)) bytes of fds, each a fresh
    // fd the kernel installed for us (so OwnedFd may own it).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<libc::c_int>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message or fds truncated",
        ));
    }
    Ok((n as usize, fds))
}

/// Lets the child that `cmd` spawns inherit `fd` (under the same number):
/// its close-on-exec flag is cleared in the child only, between fork and exec.
pub fn inherit_fd(cmd: &mut std::process::Command, fd: RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec; it calls only
    // fcntl (async-signal-safe) and allocates nothing (last_os_error does not).
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Takes ownership of an fd a parent process passed by number, after checking
/// that it is an open unix SOCK_SEQPACKET socket; marks it close-on-exec.
pub fn adopt_passed_socket(fd: RawFd) -> io::Result<OwnedFd> {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `ty`/`len` are valid for writes; SO_TYPE writes one c_int. A bad fd fails with EBADF.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    if ty != libc::SOCK_SEQPACKET {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "passed fd is not a seqpacket socket",
        ));
    }
    // SAFETY: plain fcntl on an fd just checked to be open.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    // SAFETY: the fd is open, and the process that started us passed it for us
    // alone; it is adopted once, at start, before anything else could use it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
