//! Every suite in `tests/suites/` against the real `plinth` binary, as modules of this one
//! test binary (listed by `host/server/build.rs`). Run one suite with
//! `cargo test -p plinth-server --test integration -- control_plane::`.

include!(concat!(env!("OUT_DIR"), "/suites.rs"));
