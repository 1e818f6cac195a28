//! S3's bucket naming rules, beyond what `s3s` checks on every request.
//!
//! `s3s` refuses names outside 3–63 characters of `[a-z0-9.-]`, names that do not start
//! and end with a letter or digit, `..`, IP addresses and the `xn--` prefix. S3 also
//! refuses a period next to a hyphen and the prefixes and suffixes it reserves for access
//! points and Object Lambda; the gateway refuses those at `CreateBucket`, so every bucket
//! it holds is one S3 would accept.

/// Why S3 would refuse `name` as a new bucket's name, for the checks `s3s` does not make.
#[must_use]
pub fn bucket_name_problem(name: &str) -> Option<&'static str> {
    if name.contains(".-") || name.contains("-.") {
        return Some("a period may not be next to a hyphen");
    }
    if name.starts_with("sthree-") || name.starts_with("amzn-s3-demo-") {
        return Some("the prefix is reserved");
    }
    if ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"]
        .iter()
        .any(|s| name.ends_with(s))
    {
        return Some("the suffix is reserved");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::bucket_name_problem;

    #[test]
    fn refuses_what_s3_refuses_and_keeps_the_rest() {
        for bad in [
            "a.-b",
            "a-.b",
            "sthree-x",
            "amzn-s3-demo-x",
            "x-s3alias",
            "x--ol-s3",
            "x.mrap",
            "x--x-s3",
            "x--table-s3",
        ] {
            assert!(bucket_name_problem(bad).is_some(), "{bad}");
        }
        for good in ["abc", "a.b-c", "my-bucket.2026", "s3alias", "a-s3alia"] {
            assert_eq!(bucket_name_problem(good), None, "{good}");
        }
    }
}
