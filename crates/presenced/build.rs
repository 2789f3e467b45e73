//! With the `python` feature, points the binary's run-time library path at the libpython it
//! was built against: otherwise the dynamic loader may pick another `libpython3.x.so` (the
//! distribution's), which loads but has another `sys.prefix`, so installed modules vanish.

fn main() {
    // Features reach build scripts as environment variables, not as `cfg`.
    if std::env::var_os("CARGO_FEATURE_PYTHON").is_some() {
        pyo3_build_config::add_libpython_rpath_link_args();
    }
}
