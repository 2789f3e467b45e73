//! Points the run-time library path of this crate's tests and examples at the libpython the
//! crate was built against. Without it the dynamic loader picks the first `libpython3.x.so`
//! on its default path (the distribution's), which is ABI-compatible but has another
//! `sys.prefix`, so the build's site-packages silently disappear.

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
