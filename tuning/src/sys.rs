//! The one system call this crate makes: `getrlimit(2)`. Everything else is
//! read from `/proc` and `/sys` as text.

use crate::snapshot::{Rlimit, RlimitValue};

/// Which process limit to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    /// `RLIMIT_NOFILE`: open file descriptors.
    OpenFiles,
    /// `RLIMIT_MEMLOCK`: locked memory, bytes.
    LockedMemory,
}

/// Reads the soft and hard limit of `resource` for this process.
///
/// This is the only `unsafe` in the crate.
// rlim_t is u64 on 64-bit Linux (the conversion below is then the identity)
// but c_ulong on some 32-bit targets.
#[allow(unsafe_code, clippy::useless_conversion)]
pub(crate) fn getrlimit(resource: Resource) -> std::io::Result<Rlimit> {
    let which = match resource {
        Resource::OpenFiles => libc::RLIMIT_NOFILE,
        Resource::LockedMemory => libc::RLIMIT_MEMLOCK,
    };
    let mut raw = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `which` is a valid resource constant from libc for this target,
    // and `raw` is a live, properly aligned, writable `libc::rlimit` owned by
    // this frame for the whole call; getrlimit writes only into it and keeps
    // no pointer after returning.
    let rc = unsafe { libc::getrlimit(which, &mut raw) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let value = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            RlimitValue::Unlimited
        } else {
            RlimitValue::Finite(u64::from(v))
        }
    };
    Ok(Rlimit {
        soft: value(raw.rlim_cur),
        hard: value(raw.rlim_max),
    })
}
