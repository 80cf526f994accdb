//! The hint-key, option, value and release parsers of `hints/`: whatever they accept must rebuild to the same
//! text, so the webhook and the node hook, which build keys with the same functions, read back what they wrote.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mount_hints::{
    force_shared_key, hint_key, is_dns1123_label, is_valid_annotation_key, parse_force_shared_key, parse_hint_key,
    parse_options, validate_volume_name, HintType, MountOption, RunscRelease, Share, FLAG_OPTIONS,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(Some(key)) = parse_hint_key(text) {
        assert_eq!(hint_key(key.name, key.field), text);
        if validate_volume_name(key.name).is_ok() {
            assert!(!key.name.contains(['.', '/']));
        }
    }
    if let Some(name) = parse_force_shared_key(text) {
        assert_eq!(force_shared_key(name), text);
    }
    if is_dns1123_label(text) {
        assert_eq!(validate_volume_name(text), Ok(text));
        assert!(is_valid_annotation_key(text));
    }
    for allow_size in [false, true] {
        match parse_options(text, allow_size) {
            Ok(options) => {
                let rebuilt: Vec<String> = options
                    .iter()
                    .map(|option| match option {
                        MountOption::Flag(flag) => {
                            assert!(FLAG_OPTIONS.contains(flag));
                            (*flag).to_owned()
                        }
                        MountOption::Size(size) => {
                            assert!(allow_size, "size= accepted where valued options are not allowed");
                            format!("size={size}")
                        }
                    })
                    .collect();
                assert_eq!(rebuilt.join(","), text);
            }
            Err(error) => assert!(!error.to_string().is_empty()),
        }
    }
    if let Ok(hint_type) = text.parse::<HintType>() {
        assert_eq!(hint_type.as_str(), text);
    }
    if let Ok(share) = text.parse::<Share>() {
        assert_eq!(share.as_str(), text);
    }
    if let Ok(release) = text.parse::<RunscRelease>() {
        assert_eq!(release.to_string().parse::<RunscRelease>(), Ok(release));
        assert_eq!(RunscRelease::from_date(release.date()), Ok(release));
    }
    if let Ok(release) = RunscRelease::from_version_output(text) {
        assert!(release.date() >= 20_180_000);
    }
});
