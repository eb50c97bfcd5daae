//! Process tuning that must happen before the C library reads it.
//!
//! glibc (2.36 on Debian 12) copies 2 KiB and more with `rep movsb` when the
//! CPU advertises fast string moves (its `x86_rep_movsb_threshold`). On AMD
//! Zen CPUs that instruction runs 50 to 70 times slower when the destination
//! lies 1 to 16 bytes after the source modulo 4 KiB: measured on this
//! project's machine, 16 KiB in 10-16 µs instead of 0.17 µs, and 64 KiB at
//! 1.2 GB/s. A TLS record's payload sits 5 bytes after its header, and
//! rustls copies each record's plaintext from our body buffer into a record
//! buffer at offset 5: with both buffers page-aligned (large allocations
//! are), every record hit the slow case, and copies took a third of the CPU
//! of an HTTPS response of 64 KiB (`h2` frames, 9 bytes of header before
//! their payload, are the same shape).
//!
//! glibc reads its tunables once, from `GLIBC_TUNABLES` at process start, and
//! they cannot be changed later. So `ringmesh run` on an AMD CPU executes
//! itself again, once, with the threshold raised past any copy it makes
//! (glibc then copies with vector loops: 0.17-0.4 µs per 16 KiB at any
//! alignment), unless the operator set that tunable already or set
//! `RINGMESH_NO_COPY_TUNING`. The process keeps its pid (systemd's main pid,
//! the upgrade handover's inherited sockets and arguments are untouched),
//! and the environment is restored before anything else runs, so the
//! backends ringmesh starts inherit the operator's environment, not ours.

/// The glibc tunable (bytes from which `memcpy` uses `rep movsb`).
const TUNABLE: &str = "glibc.cpu.x86_rep_movsb_threshold";
/// Marks the re-executed process and holds the operator's `GLIBC_TUNABLES`.
const MARK: &str = "RINGMESH_GLIBC_TUNABLES_WAS";
/// Opt-out (and the A/B switch of the benchmarks).
const OPT_OUT: &str = "RINGMESH_NO_COPY_TUNING";

/// Call first thing in `ringmesh run`, while the process has one thread.
/// Returns only if no re-execution happened (or it failed: then ringmesh
/// runs with glibc's defaults and says so).
pub fn copy_tuning() {
    if let Some(was) = std::env::var_os(MARK) {
        // The re-executed process: glibc has read the tunable; give the
        // environment back as the operator set it.
        std::env::remove_var(MARK);
        if was.is_empty() {
            std::env::remove_var("GLIBC_TUNABLES");
        } else {
            std::env::set_var("GLIBC_TUNABLES", was);
        }
        return;
    }
    if !cfg!(all(target_arch = "x86_64", target_env = "gnu")) || std::env::var_os(OPT_OUT).is_some()
    {
        return;
    }
    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if current.contains(TUNABLE) || !amd_cpu() {
        return;
    }
    let tuned = if current.is_empty() {
        format!("{TUNABLE}=4294967295")
    } else {
        format!("{current}:{TUNABLE}=4294967295")
    };
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .env("GLIBC_TUNABLES", tuned)
        .env(MARK, current)
        .exec();
    eprintln!("ringmesh: could not re-execute with {TUNABLE} raised ({err}); running with glibc's defaults");
}

/// An AMD (or Hygon, the same Zen cores) CPU, from /proc/cpuinfo.
fn amd_cpu() -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return false;
    };
    info.lines()
        .find(|l| l.starts_with("vendor_id"))
        .is_some_and(|l| l.contains("AuthenticAMD") || l.contains("HygonGenuine"))
}
