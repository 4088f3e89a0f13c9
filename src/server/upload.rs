//! A streaming parser for the Create File body: a JSON object whose `data` member is the
//! whole file in base64, in any position among the other members.
//!
//! The body arrives in chunks split anywhere. The parser tokenizes the top-level object,
//! decodes the `data` string on the fly (keeping fewer than four base64 characters between
//! chunks) into the caller's buffer, and keeps the raw JSON text of the members the API
//! knows (the last of duplicates), parsed at the end; other members are checked and
//! dropped as they end. Memory stays bounded by the chunk size plus a few times
//! [`MAX_METADATA`], whatever the file size and however the body is shaped.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::{Map, Value};

use super::fields;

/// Limit on everything in the body except `data` (keys and other values).
pub const MAX_METADATA: usize = 1 << 20;
const MAX_KEY: usize = 1024;

/// Standard alphabet; padding optional at the very end (some encoders drop it).
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadParseError {
    /// Not a JSON object of the expected shape (400).
    Syntax(String),
    /// `data` holds something that is not base64 (400).
    Base64(String),
    /// The members other than `data` exceed [`MAX_METADATA`] (413).
    MetadataTooLarge,
}

impl std::fmt::Display for UploadParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadParseError::Syntax(m) => write!(f, "malformed JSON body: {m}"),
            UploadParseError::Base64(m) => write!(f, "data is not valid base64: {m}"),
            UploadParseError::MetadataTooLarge => write!(
                f,
                "the fields other than data exceed {} bytes",
                MAX_METADATA
            ),
        }
    }
}

impl std::error::Error for UploadParseError {}

type PResult<T> = Result<T, UploadParseError>;

fn syntax<T>(msg: impl Into<String>) -> PResult<T> {
    Err(UploadParseError::Syntax(msg.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `{`.
    Start,
    /// After `{`: a key or `}`.
    FirstKey,
    /// After `,`: a key.
    NextKey,
    /// Inside a key string.
    Key,
    /// After a key: `:`.
    Colon,
    /// After `:`: the first character of a value.
    ValueStart,
    /// Inside the `data` string.
    Data,
    /// Inside any other value.
    Value,
    /// After a value: `,` or `}`.
    AfterValue,
    /// After the closing `}`: only whitespace.
    Done,
}

/// What the body held besides the bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadFields {
    /// The known members except `data` (see [`super::fields`]), parsed.
    pub fields: Map<String, Value>,
    /// `data` was present as a string (and its bytes went to the output).
    pub data_present: bool,
    /// `data` was present but not a string (e.g. `null`).
    pub data_not_string: bool,
}

pub struct UploadParser {
    state: State,
    /// Raw key text (escapes undecoded) and whether the last byte was a backslash.
    key: Vec<u8>,
    key_escape: bool,
    current_key: String,
    /// Raw text of the current non-data value and its nesting state.
    value: Vec<u8>,
    depth: u32,
    in_string: bool,
    string_escape: bool,
    /// Raw text of the known members; the last of duplicates wins.
    raw_members: Vec<(&'static str, Vec<u8>)>,
    metadata_len: usize,
    /// Base64 characters not decoded yet (fewer than 4 between calls).
    pending: Vec<u8>,
    data_escape: bool,
    /// A padded quad was decoded: the data must end now.
    data_padded: bool,
    data_present: bool,
    data_not_string: bool,
}

impl Default for UploadParser {
    fn default() -> Self {
        Self::new()
    }
}

impl UploadParser {
    pub fn new() -> Self {
        UploadParser {
            state: State::Start,
            key: Vec::new(),
            key_escape: false,
            current_key: String::new(),
            value: Vec::new(),
            depth: 0,
            in_string: false,
            string_escape: false,
            raw_members: Vec::new(),
            metadata_len: 0,
            pending: Vec::with_capacity(8),
            data_escape: false,
            data_padded: false,
            data_present: false,
            data_not_string: false,
        }
    }

    /// Consumes one chunk, appending decoded file bytes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> PResult<()> {
        let mut i = 0;
        while i < chunk.len() {
            if self.state == State::Data {
                i += self.feed_data(&chunk[i..], out)?;
                continue;
            }
            let b = chunk[i];
            i += 1;
            self.step(b)?;
        }
        Ok(())
    }

    /// Checks the body ended with a complete object and returns the other members.
    pub fn finish(self) -> PResult<UploadFields> {
        if self.state != State::Done {
            return syntax("unexpected end of body");
        }
        let mut fields = Map::new();
        for (k, raw) in self.raw_members {
            let v = fields::parse_value(&raw)
                .map_err(|e| UploadParseError::Syntax(format!("value of {k:?}: {e}")))?;
            fields.insert(k.to_string(), v);
        }
        Ok(UploadFields {
            fields,
            data_present: self.data_present,
            data_not_string: self.data_not_string,
        })
    }

    fn step(&mut self, b: u8) -> PResult<()> {
        let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        match self.state {
            State::Start => match b {
                _ if ws => {}
                b'{' => self.state = State::FirstKey,
                _ => return syntax("the body must be a JSON object"),
            },
            State::FirstKey | State::NextKey => match b {
                _ if ws => {}
                b'"' => {
                    self.key.clear();
                    self.key_escape = false;
                    self.state = State::Key;
                }
                b'}' if self.state == State::FirstKey => self.state = State::Done,
                _ => return syntax("expected a member name"),
            },
            State::Key => {
                if self.key_escape {
                    self.key_escape = false;
                } else if b == b'\\' {
                    self.key_escape = true;
                } else if b == b'"' {
                    let mut quoted = Vec::with_capacity(self.key.len() + 2);
                    quoted.push(b'"');
                    quoted.extend_from_slice(&self.key);
                    quoted.push(b'"');
                    self.current_key = serde_json::from_slice(&quoted)
                        .map_err(|e| UploadParseError::Syntax(format!("member name: {e}")))?;
                    self.add_metadata(self.key.len())?;
                    self.state = State::Colon;
                    return Ok(());
                }
                if self.key.len() >= MAX_KEY {
                    return syntax("member name too long");
                }
                self.key.push(b);
            }
            State::Colon => match b {
                _ if ws => {}
                b':' => self.state = State::ValueStart,
                _ => return syntax("expected ':'"),
            },
            State::ValueStart => {
                if ws {
                    return Ok(());
                }
                if self.current_key == "data" {
                    if self.data_present || self.data_not_string {
                        return syntax("duplicate data member");
                    }
                    if b == b'"' {
                        self.data_present = true;
                        self.pending.clear();
                        self.data_escape = false;
                        self.data_padded = false;
                        self.state = State::Data;
                        return Ok(());
                    }
                    self.data_not_string = true;
                }
                self.value.clear();
                self.depth = 0;
                self.in_string = false;
                self.string_escape = false;
                self.state = State::Value;
                self.value_byte(b)?;
            }
            State::Value => self.value_byte(b)?,
            State::AfterValue => match b {
                _ if ws => {}
                b',' => self.state = State::NextKey,
                b'}' => self.state = State::Done,
                _ => return syntax("expected ',' or '}'"),
            },
            State::Done => {
                if !ws {
                    return syntax("trailing characters after the object");
                }
            }
            State::Data => unreachable!("data bytes go through feed_data"),
        }
        Ok(())
    }

    fn add_metadata(&mut self, n: usize) -> PResult<()> {
        self.metadata_len += n;
        if self.metadata_len > MAX_METADATA {
            return Err(UploadParseError::MetadataTooLarge);
        }
        Ok(())
    }

    /// One byte of a non-data value. Strings, objects and arrays end with their closing
    /// character; scalars end at the first character that cannot belong to them, which is
    /// then handled as the start of what follows the value.
    fn value_byte(&mut self, b: u8) -> PResult<()> {
        if self.in_string {
            self.value.push(b);
            if self.string_escape {
                self.string_escape = false;
            } else if b == b'\\' {
                self.string_escape = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.depth == 0 {
                    return self.end_value();
                }
            }
        } else {
            match b {
                b'"' => {
                    self.in_string = true;
                    self.value.push(b);
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    self.value.push(b);
                }
                b'}' | b']' if self.depth > 0 => {
                    self.depth -= 1;
                    self.value.push(b);
                    if self.depth == 0 {
                        return self.end_value();
                    }
                }
                b',' | b'}' | b' ' | b'\t' | b'\n' | b'\r' if self.depth == 0 => {
                    if self.value.is_empty() {
                        return syntax("expected a value");
                    }
                    self.end_value()?;
                    return self.step(b);
                }
                _ => self.value.push(b),
            }
        }
        if self.value.len() > MAX_METADATA {
            return Err(UploadParseError::MetadataTooLarge);
        }
        Ok(())
    }

    fn end_value(&mut self) -> PResult<()> {
        self.add_metadata(self.value.len())?;
        let raw = std::mem::take(&mut self.value);
        let key = std::mem::take(&mut self.current_key);
        match fields::known(&key) {
            Some(k) => {
                self.raw_members.retain(|(name, _)| *name != k);
                self.raw_members.push((k, raw));
            }
            // Unknown members and a non-string data: checked, then dropped.
            None => fields::check_value(&raw)
                .map_err(|e| UploadParseError::Syntax(format!("value of {key:?}: {e}")))?,
        }
        self.state = State::AfterValue;
        Ok(())
    }

    /// Consumes bytes of the data string from the start of `input`; returns how many.
    fn feed_data(&mut self, input: &[u8], out: &mut Vec<u8>) -> PResult<usize> {
        if self.data_escape {
            self.data_escape = false;
            match input[0] {
                // JSON allows escaping '/', and some encoders do.
                b'/' => self.push_b64(b"/", out)?,
                // Line breaks of MIME-style base64: not data.
                b'n' | b'r' => {}
                other => {
                    return Err(UploadParseError::Base64(format!(
                        "unexpected escape \\{}",
                        other as char
                    )))
                }
            }
            return Ok(1);
        }
        // memchr2: the data string is nearly the whole body, so this scan is hot.
        let stop = memchr::memchr2(b'"', b'\\', input).unwrap_or(input.len());
        self.push_b64(&input[..stop], out)?;
        if stop == input.len() {
            return Ok(stop);
        }
        if input[stop] == b'\\' {
            self.data_escape = true;
            return Ok(stop + 1);
        }
        // Closing quote: decode what is left (an unpadded tail is accepted).
        if !self.pending.is_empty() {
            if self.data_padded {
                return Err(UploadParseError::Base64("characters after padding".into()));
            }
            B64.decode_vec(&self.pending, out)
                .map_err(|e| UploadParseError::Base64(e.to_string()))?;
            self.pending.clear();
        }
        self.state = State::AfterValue;
        Ok(stop + 1)
    }

    /// Decodes every complete quad of `pending + chars`, keeping the rest.
    fn push_b64(&mut self, chars: &[u8], out: &mut Vec<u8>) -> PResult<()> {
        if chars.is_empty() {
            return Ok(());
        }
        if self.data_padded {
            return Err(UploadParseError::Base64("characters after padding".into()));
        }
        let mut chars = chars;
        // Complete the pending quad first, then decode straight from the input.
        if !self.pending.is_empty() {
            let need = 4 - self.pending.len();
            let take = need.min(chars.len());
            self.pending.extend_from_slice(&chars[..take]);
            chars = &chars[take..];
            if self.pending.len() < 4 {
                return Ok(());
            }
            let quad = std::mem::take(&mut self.pending);
            self.decode_quads(&quad, out)?;
            if self.data_padded && !chars.is_empty() {
                return Err(UploadParseError::Base64("characters after padding".into()));
            }
        }
        let whole = chars.len() / 4 * 4;
        self.decode_quads(&chars[..whole], out)?;
        if whole < chars.len() && self.data_padded {
            return Err(UploadParseError::Base64("characters after padding".into()));
        }
        self.pending.extend_from_slice(&chars[whole..]);
        Ok(())
    }

    fn decode_quads(&mut self, quads: &[u8], out: &mut Vec<u8>) -> PResult<()> {
        if quads.is_empty() {
            return Ok(());
        }
        // The bulk through the SIMD decoder (several times faster; it rejects anything
        // outside the alphabet, `=` included); a padded last quad through the lenient one.
        let (bulk, last) = if quads.last() == Some(&b'=') {
            quads.split_at(quads.len() - 4)
        } else {
            (quads, &[][..])
        };
        if bulk.last() == Some(&b'=') {
            return Err(UploadParseError::Base64("characters after padding".into()));
        }
        base64_simd::STANDARD
            .decode_append(bulk, out)
            .map_err(|e| UploadParseError::Base64(e.to_string()))?;
        if !last.is_empty() {
            B64.decode_vec(last, out)
                .map_err(|e| UploadParseError::Base64(e.to_string()))?;
            self.data_padded = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    /// Parses `body` fed in pieces of the given sizes (cycled).
    fn parse_chunked(body: &[u8], sizes: &[usize]) -> PResult<(Vec<u8>, UploadFields)> {
        let mut p = UploadParser::new();
        let mut out = Vec::new();
        let mut rest = body;
        let mut k = 0;
        while !rest.is_empty() {
            let n = sizes[k % sizes.len()].clamp(1, rest.len());
            k += 1;
            p.feed(&rest[..n], &mut out)?;
            rest = &rest[n..];
        }
        Ok((out, p.finish()?))
    }

    fn parse(body: &[u8]) -> PResult<(Vec<u8>, UploadFields)> {
        parse_chunked(body, &[usize::MAX])
    }

    /// Every split into two pieces, and one byte at a time, must give the same result
    /// (for errors: the same kind; the message may name a different offset).
    fn parse_every_way(body: &[u8]) -> PResult<(Vec<u8>, UploadFields)> {
        let whole = parse(body);
        let same = |other: PResult<(Vec<u8>, UploadFields)>, how: &str| match (&whole, other) {
            (Ok(a), Ok(b)) => assert_eq!(a, &b, "{how}"),
            (Err(a), Err(b)) => assert_eq!(
                std::mem::discriminant(a),
                std::mem::discriminant(&b),
                "{how}: {a:?} vs {b:?}"
            ),
            (a, b) => panic!("{how}: {a:?} vs {b:?}"),
        };
        same(parse_chunked(body, &[1]), "1-byte chunks");
        for cut in 1..body.len() {
            same(
                parse_chunked(body, &[cut, usize::MAX]),
                &format!("cut at {cut}"),
            );
        }
        whole
    }

    #[test]
    fn data_first_last_and_middle() {
        let bytes = b"hello, world\x00\xff binary";
        let b64 = STANDARD.encode(bytes);
        for body in [
            format!(r#"{{"data":"{b64}","fileName":"a.bin","mimeType":"x/y"}}"#),
            format!(r#"{{"fileName":"a.bin","mimeType":"x/y","data":"{b64}"}}"#),
            format!(r#"{{"fileName":"a.bin","data":"{b64}","mimeType":"x/y"}}"#),
            format!(
                " \n{{ \"fileName\" : \"a.bin\" ,\r\n\t\"data\" :\"{b64}\" , \"mimeType\":\"x/y\" }} \n"
            ),
        ] {
            let (out, f) = parse_every_way(body.as_bytes()).unwrap();
            assert_eq!(out, bytes, "{body}");
            assert!(f.data_present);
            assert_eq!(f.fields["fileName"], "a.bin");
            assert_eq!(f.fields["mimeType"], "x/y");
        }
    }

    #[test]
    fn tricky_other_values() {
        let body = r#"{"title":"say \"data\": {x}, \\","data":"QUJD","description":null,
            "folderId":null,"sortOrder":-12,"isFavorite":true,"isPrivate":false,
            "extra":{"data":"not this","a":[1,{"b":"]}"}]},"mimeType":1.5e3,"altText":"\u00e9\/",
            "fileName":{"data":"nested"}}"#;
        let (out, f) = parse_every_way(body.as_bytes()).unwrap();
        assert_eq!(out, b"ABC");
        assert_eq!(f.fields["title"], r#"say "data": {x}, \"#);
        assert_eq!(f.fields["description"], Value::Null);
        assert_eq!(f.fields["sortOrder"], -12);
        assert_eq!(f.fields["isFavorite"], true);
        // Unknown members are checked, then dropped; known compound values are kept as
        // empty ones (only their type matters), so nothing in them is taken for `data`.
        assert!(!f.fields.contains_key("extra"));
        assert_eq!(f.fields["fileName"], Value::Object(Map::new()));
        assert_eq!(f.fields["mimeType"], 1500.0);
        assert_eq!(f.fields["altText"], "é/");
    }

    #[test]
    fn escaped_key_named_data_is_the_data_member() {
        let (out, _) = parse_every_way(br#"{"d\u0061ta":"QUJD"}"#).unwrap();
        assert_eq!(out, b"ABC");
    }

    #[test]
    fn padding_variants_and_escaped_slash() {
        for (b64, want) in [
            ("", &b""[..]),
            ("QQ==", b"A"),
            ("QUI=", b"AB"),
            ("QQ", b"A"),
            ("QUI", b"AB"),
            ("Pz8/", b"???"),
            (r"Pz8\/", b"???"),
            (r"QUJD\nREVG", b"ABCDEF"),
        ] {
            let body = format!(r#"{{"data":"{b64}","fileName":"f"}}"#);
            let (out, _) = parse_every_way(body.as_bytes()).unwrap();
            assert_eq!(out, want, "{b64}");
        }
    }

    #[test]
    fn rejects_bad_base64() {
        for b64 in [
            "Q",
            "QQ==QUJD",
            "QQ==QQ==",
            "QUJDQQ==QQ==",
            "QQ=A",
            "QU*D",
            "QUJD QUJD",
            r"QU\tJD",
            "QQ===",
            "é",
        ] {
            let body = format!(r#"{{"data":"{b64}","fileName":"f"}}"#);
            let err = parse_every_way(body.as_bytes()).unwrap_err();
            assert!(matches!(err, UploadParseError::Base64(_)), "{b64}: {err:?}");
        }
    }

    #[test]
    fn rejects_bad_json() {
        for body in [
            "",
            "[]",
            r#"{"data":"QUJD""#,
            r#"{"data":"QUJD",}"#,
            r#"{"data" "QUJD"}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":}"#,
            r#"{"a":tru}"#,
            r#"{"a":1}x"#,
            r#"{"data":"QUJD","data":"QUJD"}"#,
            r#"{a:1}"#,
        ] {
            let err = parse_every_way(body.as_bytes()).unwrap_err();
            assert!(
                matches!(err, UploadParseError::Syntax(_)),
                "{body}: {err:?}"
            );
        }
    }

    #[test]
    fn non_string_data_and_missing_data_are_reported() {
        let (_, f) = parse(br#"{"data":null,"fileName":"f"}"#).unwrap();
        assert!(f.data_not_string && !f.data_present);
        let (_, f) = parse(br#"{"fileName":"f"}"#).unwrap();
        assert!(!f.data_not_string && !f.data_present);
        let (_, f) = parse(b"{}").unwrap();
        assert!(f.fields.is_empty());
    }

    #[test]
    fn metadata_is_bounded() {
        let big = "x".repeat(MAX_METADATA + 10);
        let body = format!(r#"{{"title":"{big}","data":""}}"#);
        assert_eq!(
            parse(body.as_bytes()).unwrap_err(),
            UploadParseError::MetadataTooLarge
        );
    }

    #[test]
    fn many_members_keep_only_the_known_ones() {
        let mut p = UploadParser::new();
        let mut out = Vec::new();
        p.feed(br#"{"data":"QUJD""#, &mut out).unwrap();
        for i in 0..50_000 {
            p.feed(format!(r#","k{i}":0,"title":"t{i}""#).as_bytes(), &mut out)
                .unwrap();
        }
        assert_eq!(
            p.raw_members.len(),
            1,
            "duplicates replace, unknowns are dropped"
        );
        p.feed(b"}", &mut out).unwrap();
        let f = p.finish().unwrap();
        assert_eq!(f.fields["title"], "t49999");
        assert_eq!(f.fields.len(), 1);
    }

    proptest! {
        #[test]
        fn roundtrips_random_bytes_in_random_chunks(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000),
            sizes in proptest::collection::vec(1usize..97, 1..8),
            data_first in any::<bool>(),
        ) {
            let b64 = STANDARD.encode(&bytes);
            let body = if data_first {
                format!(r#"{{"data":"{b64}","fileName":"n","sortOrder":3}}"#)
            } else {
                format!(r#"{{"fileName":"n","sortOrder":3,"data":"{b64}"}}"#)
            };
            let (out, f) = parse_chunked(body.as_bytes(), &sizes).unwrap();
            prop_assert_eq!(out, bytes);
            prop_assert_eq!(&f.fields["sortOrder"], &Value::from(3));
        }
    }
}
