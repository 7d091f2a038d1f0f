//! The proof-of-work challenge palisade serves to browsers: an HTML page
//! with an inline script (no external script, no CDN) that finds a number
//! `n` such that SHA-256(`token` ":" `n`) starts with `difficulty` zero
//! bits, then sends the answer to the verify path, which sets the
//! clearance cookie and sends the browser back where it was going.
//!
//! The token is a signed challenge (see [`super::token`]) bound to the
//! client's address prefix and browser, with its own expiry and the
//! difficulty it was issued with, so an answer is worth nothing from
//! another network, after expiry, or without the secret.

use sha2::{Digest, Sha256};

/// Whether `nonce` answers the challenge `token` at `difficulty` bits.
pub fn solves(token: &str, nonce: &str, difficulty: u8) -> bool {
    if nonce.is_empty() || nonce.len() > 20 || !nonce.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let mut hasher = Sha256::new();
    hasher.update(token.as_bytes());
    hasher.update(b":");
    hasher.update(nonce.as_bytes());
    leading_zero_bits(&hasher.finalize()) >= u32::from(difficulty)
}

fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in digest {
        if *byte == 0 {
            bits += 8;
        } else {
            return bits + byte.leading_zeros();
        }
    }
    bits
}

/// Solve a challenge in Rust (tests, benches and the documentation's
/// example client do what the page's script does).
pub fn solve(token: &str, difficulty: u8) -> u64 {
    (0u64..).find(|n| solves(token, &n.to_string(), difficulty)).unwrap_or(0)
}

/// A path palisade may send a browser back to after the challenge: local,
/// absolute, no scheme or authority, no control characters.
pub fn safe_return(path: &str) -> Option<&str> {
    let local = path.starts_with('/') && !path.starts_with("//") && !path.starts_with("/\\");
    let clean = path.len() <= 2048 && !path.bytes().any(|b| b.is_ascii_control() || b == b'\\');
    (local && clean).then_some(path)
}

/// The interstitial page. `token`, `verify_path` and `return_to` are
/// placed in the script as JSON strings (escaped for a `<script>` block).
pub fn page(token: &str, difficulty: u8, verify_path: &str, return_to: &str) -> String {
    let json = |text: &str| serde_json::Value::from(text).to_string().replace('<', "\\u003c").replace('>', "\\u003e");
    PAGE.replace("{{TOKEN}}", &json(token))
        .replace("{{DIFFICULTY}}", &difficulty.to_string())
        .replace("{{VERIFY}}", &json(verify_path))
        .replace("{{RETURN}}", &json(return_to))
}

/// The page: a message, and a plain SHA-256 in JavaScript (synchronous,
/// so it needs no secure context and runs the same on plain HTTP).
const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>One moment…</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:15vh auto;padding:0 1rem;color:#222}</style>
</head><body><h1>One moment…</h1>
<p id="status">Your browser is doing a short check before it continues. This takes about a second.</p>
<noscript><p>This check needs JavaScript. Please turn it on and reload the page.</p></noscript>
<script>
(function () {
  "use strict";
  var token = {{TOKEN}}, difficulty = {{DIFFICULTY}}, verify = {{VERIFY}}, back = {{RETURN}};
  var K = new Int32Array([
    0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,
    0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,
    0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,
    0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,
    0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,
    0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,
    0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,
    0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2]);
  var W = new Int32Array(64);
  // The first 32 bits of SHA-256 over the ASCII text `s`.
  function firstWord(s) {
    var len = s.length, blocks = ((len + 8) >> 6) + 1, M = new Int32Array(blocks * 16), i, t;
    for (i = 0; i < len; i++) M[i >> 2] |= (s.charCodeAt(i) & 0xff) << (24 - (i & 3) * 8);
    M[len >> 2] |= 0x80 << (24 - (len & 3) * 8);
    M[blocks * 16 - 1] = len * 8;
    var h0 = 0x6a09e667, h1 = 0xbb67ae85 | 0, h2 = 0x3c6ef372, h3 = 0xa54ff53a | 0,
        h4 = 0x510e527f, h5 = 0x9b05688c | 0, h6 = 0x1f83d9ab, h7 = 0x5be0cd19;
    for (var b = 0; b < blocks; b++) {
      for (t = 0; t < 16; t++) W[t] = M[b * 16 + t];
      for (t = 16; t < 64; t++) {
        var x = W[t - 15], y = W[t - 2];
        var s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
        var s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
        W[t] = (W[t - 16] + s0 + W[t - 7] + s1) | 0;
      }
      var a = h0, c1 = h1, c2 = h2, d = h3, e = h4, f = h5, g = h6, h = h7;
      for (t = 0; t < 64; t++) {
        var S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        var t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[t] + W[t]) | 0;
        var S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        var t2 = (S0 + ((a & c1) ^ (a & c2) ^ (c1 & c2))) | 0;
        h = g; g = f; f = e; e = (d + t1) | 0; d = c2; c2 = c1; c1 = a; a = (t1 + t2) | 0;
      }
      h0 = (h0 + a) | 0; h1 = (h1 + c1) | 0; h2 = (h2 + c2) | 0; h3 = (h3 + d) | 0;
      h4 = (h4 + e) | 0; h5 = (h5 + f) | 0; h6 = (h6 + g) | 0; h7 = (h7 + h) | 0;
    }
    return h0 >>> 0;
  }
  var prefix = token + ":", n = 0, shift = 32 - difficulty;
  function work() {
    var stop = n + 20000;
    for (; n < stop; n++) {
      if ((firstWord(prefix + n) >>> shift) === 0) {
        location.replace(verify + "?t=" + encodeURIComponent(token) + "&n=" + n + "&r=" + encodeURIComponent(back));
        return;
      }
    }
    setTimeout(work, 0);
  }
  setTimeout(work, 0);
})();
</script></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_solution_is_checked_bit_by_bit() {
        let token = "AQpzAAAD6AAAB9AHBwcHBwcHBwABAgMEBQYHEA";
        let n = solve(token, 12);
        assert!(solves(token, &n.to_string(), 12));
        // Most numbers are not answers, and a non-number never is.
        let wrong = (0..).find(|m| !solves(token, &m.to_string(), 12)).unwrap();
        assert!(!solves(token, &wrong.to_string(), 12));
        assert!(!solves(token, "", 0));
        assert!(!solves(token, "12a", 0));
        assert!(solves(token, "5", 0));
    }

    #[test]
    fn only_local_paths_are_returned_to() {
        assert_eq!(safe_return("/login?next=/x"), Some("/login?next=/x"));
        for bad in ["//evil.example/", "https://evil.example/", "/\\evil", "login", "/a\nb"] {
            assert_eq!(safe_return(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_page_has_no_external_script_and_escapes_its_values() {
        let html = page("tok</script>", 16, "/.palisade/verify", "/login");
        assert!(!html.contains("src="));
        assert!(!html.contains("tok</script>"));
        assert!(html.contains("difficulty = 16"));
    }
}
