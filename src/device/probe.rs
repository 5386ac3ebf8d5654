//! The probe made before any cudarc call (R10.9): cudarc panics when a library is missing, so
//! the driver library is opened here with `libloading`, initialised and asked for its device
//! count, and cuBLAS and NVRTC are looked for the way cudarc will look for them.

use std::sync::OnceLock;

/// What the probe found: the number of devices, or what is missing.
pub(crate) fn probe() -> Result<usize, String> {
    static PROBE: OnceLock<Result<usize, String>> = OnceLock::new();
    PROBE.get_or_init(run).clone()
}

type CuInit = unsafe extern "C" fn(u32) -> i32;
type CuDeviceGetCount = unsafe extern "C" fn(*mut i32) -> i32;

fn run() -> Result<usize, String> {
    // Tests and CI can hide a present driver (the GPU-less paths must be testable everywhere).
    if std::env::var_os("TAGSTREAM_NO_CUDA").is_some() {
        return Err("TAGSTREAM_NO_CUDA is set".into());
    }
    // SAFETY: loading the system's CUDA driver library runs its initialisers, which is what
    // every CUDA program does; the library stays loaded for the life of the process.
    let lib = unsafe { libloading::Library::new("libcuda.so.1") }
        .or_else(|_| unsafe { libloading::Library::new("libcuda.so") })
        .map_err(|e| format!("the CUDA driver library libcuda.so.1 cannot be loaded ({e})"))?;
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    // SAFETY: the symbols have the driver API's C signatures (cuda.h); both are plain calls
    // with no preconditions beyond a loaded driver.
    let count = unsafe {
        let init: libloading::Symbol<'_, CuInit> = lib
            .get(b"cuInit\0")
            .map_err(|e| format!("libcuda.so.1 has no cuInit ({e})"))?;
        let get_count: libloading::Symbol<'_, CuDeviceGetCount> = lib
            .get(b"cuDeviceGetCount\0")
            .map_err(|e| format!("libcuda.so.1 has no cuDeviceGetCount ({e})"))?;
        let rc = init(0);
        if rc != 0 {
            return Err(format!(
                "cuInit failed with CUresult {rc} (100 = no device, 34 = stub library, 35 = driver too old)"
            ));
        }
        let mut n = 0i32;
        let rc = get_count(&mut n);
        if rc != 0 {
            return Err(format!("cuDeviceGetCount failed with CUresult {rc}"));
        }
        n
    };
    if count <= 0 {
        return Err("the CUDA driver reports no device".into());
    }
    // SAFETY: these only try `dlopen` on the names cudarc will use; nothing is called.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err("the cuBLAS library libcublas.so.13 cannot be loaded".into());
    }
    // SAFETY: as above.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("the NVRTC library libnvrtc.so.13 cannot be loaded".into());
    }
    Ok(count as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// R10.9: without a usable driver the probe names what is missing; it never panics.
    #[test]
    fn probe_names_what_is_missing_r10_9() {
        match probe() {
            Ok(n) => assert!(n > 0),
            Err(what) => assert!(
                what.contains("lib") || what.contains("cu") || what.contains("TAGSTREAM_NO_CUDA"),
                "{what}"
            ),
        }
    }
}
