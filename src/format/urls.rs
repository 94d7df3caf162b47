//! The URL contract (FORMAT.md §5, `urls`): absolute http(s), a host that parses, no
//! placeholder host or word, however spelled.

/// Which URLs the URL contract refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPolicy {
    /// Hosts refused, with their subdomains (`example.com` refuses `docs.example.com`).
    pub deny_hosts: Vec<String>,
    /// Words refused anywhere in a URL, case-insensitively (`placeholder`).
    pub deny_words: Vec<String>,
}

impl Default for UrlPolicy {
    fn default() -> Self {
        let own = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        UrlPolicy {
            deny_hosts: own(&[
                "example.com",
                "example.org",
                "example.net",
                "test.local",
                "localhost",
            ]),
            deny_words: own(&["placeholder"]),
        }
    }
}

impl UrlPolicy {
    /// Why `url` breaks the contract, if it does.
    ///
    /// The host is compared after WHATWG parsing (the `url` crate): percent-encoding decoded,
    /// IDNA-mapped (full-width letters, case), a trailing dot dropped — so `example.com.`,
    /// `EXAMPLE.com`, `ex%61mple.com` and `ｅｘａｍｐｌｅ.com` are all `example.com`. Loopback and
    /// unspecified addresses (`127.0.0.1`, `[::1]`, `0.0.0.0`) are placeholders too.
    pub fn check(&self, url: &str) -> Option<String> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Some("not an absolute http(s) URL".into());
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Some("contains whitespace or control characters".into());
        }
        let parsed = match url::Url::parse(url) {
            Ok(u) => u,
            Err(url::ParseError::EmptyHost) => return Some("has no host".into()),
            Err(e) => return Some(format!("is not a valid URL ({e})")),
        };
        let host = match parsed.host() {
            None => return Some("has no host".into()),
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() || ip.is_unspecified() => {
                return Some(format!("host {ip} is a local address, a placeholder"))
            }
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() || ip.is_unspecified() => {
                return Some(format!("host [{ip}] is a local address, a placeholder"))
            }
            Some(url::Host::Domain(d)) => d.trim_end_matches('.').to_ascii_lowercase(),
            Some(other) => other.to_string(),
        };
        if host.is_empty() {
            return Some("has no host".into());
        }
        let within = |host: &str, denied: &str| {
            host == denied
                || host
                    .strip_suffix(denied)
                    .is_some_and(|rest| rest.ends_with('.'))
        };
        let (unicode, _) = idna::domain_to_unicode(&host);
        let look = skeleton(&unicode);
        for denied in &self.deny_hosts {
            let denied = denied.trim_end_matches('.').to_ascii_lowercase();
            if within(&host, &denied) {
                return Some(format!(
                    "host {host} is a placeholder (deny list: {denied})"
                ));
            }
            if within(&look, &skeleton(&denied)) {
                return Some(format!(
                    "host {unicode} ({host}) looks like {denied}, a placeholder, spelled with look-alike characters"
                ));
            }
        }
        // Words are looked for in the URL as written and as decoded (`place%68older`).
        let lower = url.to_lowercase();
        let decoded = percent_decoded(&lower);
        for word in &self.deny_words {
            let word = word.to_lowercase();
            if lower.contains(&word) || decoded.contains(&word) {
                return Some(format!("looks like a placeholder (contains {word:?})"));
            }
        }
        None
    }
}

/// The TR39 confusable skeleton of a host (`exаmple.com` with a Cyrillic `а` and `example.com`
/// have the same one), lower-cased.
fn skeleton(host: &str) -> String {
    // Lower-cased after: IDNA keeps some scripts' capitals (Cherokee), whose skeletons are
    // Latin capitals.
    unicode_security::skeleton(host)
        .collect::<String>()
        .to_lowercase()
}

/// `text` with `%XX` escapes decoded (invalid UTF-8 replaced), for matching words.
fn percent_decoded(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_contract() {
        let p = UrlPolicy::default();
        assert_eq!(p.check("https://www.sqlite.org/wal.html"), None);
        assert_eq!(p.check("https://ja.wikipedia.org/wiki/東京"), None);
        for bad in [
            "ftp://files.org/x",
            "/relative/path",
            "https://example.com/a",
            "https://docs.example.org/a",
            "http://localhost:8000/",
            "https://user@test.local/x",
            "https://site.org/PLACEHOLDER",
            "https://",
            "https://a b.org/",
        ] {
            assert!(p.check(bad).is_some(), "{bad} should be refused");
        }
        assert_eq!(p.check("https://notexample.com/"), None);
    }

    #[test]
    fn placeholder_hosts_are_found_in_every_spelling() {
        let p = UrlPolicy::default();
        for bad in [
            "https://example.com./a",
            "https://localhost./",
            "http://127.0.0.1:8000/x",
            "http://[::1]/x",
            "http://0.0.0.0/",
            "https://ex%61mple.com/a",
            "https://EXAMPLE.COM/a",
            "https://\u{ff45}xample.com/a",
            "https://docs.example.org.:443/a",
            "https://site.org/place%68older",
            "https://[::1/",
            // Look-alike letters from other scripts: Cyrillic а and о, Greek ο, a Cherokee Ꭼ.
            "https://ex\u{430}mple.com/a",
            "https://docs.ex\u{430}mple.org/a",
            "https://l\u{43e}calhost/",
            "https://l\u{3bf}calhost/",
            "https://\u{13ac}xample.net/",
            "https://xn--exmple-4nf.com/a",
        ] {
            assert!(p.check(bad).is_some(), "{bad} should be refused");
        }
        let why = p.check("https://ex\u{430}mple.com/a").unwrap();
        assert!(
            why.contains("look-alike") && why.contains("example.com"),
            "{why}"
        );
        for good in [
            "https://docs.python.org/3/",
            "http://10.1.2.3/x",
            "https://münchen.de/",
            "https://site.org/a%20b",
            "https://пример.рф/",
            "https://examples.com/",
            "https://example.com.au.evil.org/",
        ] {
            assert_eq!(p.check(good), None, "{good}");
        }
    }
}
