//! Every value parser on arbitrary text: none panics, what one accepts is bounded and normalized
//! (parsing its own text gives it back), and an id's text is canonical.
#![no_main]

use lanyard_core::idempotency::RequestId;
use lanyard_core::{DisplayName, Domain, Email, OrgSlug, OrganizationId, Permission, RoleName};
use libfuzzer_sys::fuzz_target;

macro_rules! stable {
    ($ty:ty, $raw:expr, $max:expr) => {
        if let Ok(v) = <$ty>::parse($raw) {
            assert!(v.as_str().len() <= $max, "{} longer than {}: {:?}", stringify!($ty), $max, v.as_str());
            assert_eq!(<$ty>::parse(v.as_str()).as_ref(), Ok(&v), "{} does not reparse", stringify!($ty));
        }
    };
}

fuzz_target!(|raw: &str| {
    stable!(Email, raw, 320);
    stable!(Domain, raw, 253);
    stable!(OrgSlug, raw, 64);
    stable!(RoleName, raw, 64);
    stable!(Permission, raw, 128);
    if let Ok(v) = DisplayName::parse(raw, "display_name") {
        assert_eq!(DisplayName::parse(v.as_str(), "display_name").as_ref(), Ok(&v));
        assert!(!v.as_str().chars().any(char::is_control));
    }
    if let Ok(id) = OrganizationId::parse(raw) {
        assert_eq!(OrganizationId::parse(&id.to_string()), Ok(id));
    }
    if let Ok(Some(id)) = RequestId::parse(raw) {
        assert!(id.as_str().len() <= lanyard_core::idempotency::MAX_REQUEST_ID_LEN);
        assert!(!id.as_str().chars().any(char::is_control));
    }
});
