//! The JOSE header rules on arbitrary compact tokens: never a panic, and what passes names an
//! asymmetric algorithm and a printable, bounded `kid`.
#![no_main]

use lanyard_authz::jose::parse_header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|token: &str| {
    for extra in [&[][..], &["x5t"][..]] {
        if let Ok(h) = parse_header(token, extra) {
            assert!(!h.alg.eq_ignore_ascii_case("none") && !h.alg.starts_with("HS"), "alg {:?}", h.alg);
            assert!(!h.kid.is_empty() && h.kid.len() <= 256 && h.kid.bytes().all(|b| b.is_ascii_graphic()));
        }
    }
});
