//! Page requests from arbitrary sizes and tokens: never a panic, never more than the maximum page,
//! and a token the server issues reads back to the key it carries.
#![no_main]

use lanyard_core::page::{Page, MAX_PAGE_SIZE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (i32, &str)| {
    let (size, token) = input;
    let Ok(page) = Page::parse(size, token) else { return };
    assert!(page.size >= 1 && page.size <= MAX_PAGE_SIZE);
    if let Some(after) = &page.after {
        // The key a page ends on comes back as the next page's `after`.
        let rows = vec![after.clone(); page.size as usize + 1];
        let (_, next) = page.finish(rows, |k| k.clone());
        assert_eq!(Page::parse(size, &next).unwrap().after.as_deref(), Some(after.as_str()));
    }
});
