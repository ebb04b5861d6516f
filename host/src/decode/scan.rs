//! A hand-written reader for the payload of a Debezium JSON message whose schema is known: the
//! common case, every message after the first of a table. It reads the envelope's fields and
//! the row images straight into cells, borrowing keys and text from the message.
//!
//! It reads only well-formed, ordinary payloads. Anything else (malformed JSON, an escaped
//! field name, a duplicate `source` field, nesting deeper than [`MAX_DEPTH`], a value that does
//! not fit its column) makes it give up with `None`, and the serde path
//! ([`super::envelope::PayloadSeed`]) reads the payload instead and explains what is wrong. The
//! hard parts of JSON (escapes, fractions and exponents, nested values) are handed to
//! `serde_json` for that one value, so the two paths agree on every payload this one accepts;
//! the tests check that they do.

use std::borrow::Cow;

use serde_json::Value;

use super::envelope::{Source, TypedImage, TypedPayload};
use super::schema::{decimal_from_base64, normalise, ImageSchema, WireFormat, UNAVAILABLE_VALUE};
use crate::change::{Cell, Column, ColumnType};

/// Deeper nesting than this is left to serde_json (which stops at 128).
const MAX_DEPTH: usize = 64;

/// Reads `text` (a payload object) against `image`, or `None` if the serde path must.
pub fn payload<'a>(text: &'a str, image: &ImageSchema) -> Option<TypedPayload<'a>> {
    let mut r = Reader {
        s: text,
        b: text.as_bytes(),
        i: 0,
    };
    let mut p = TypedPayload {
        before: None,
        after: None,
        source: None,
        op: None,
    };
    r.object(0, |r, key| {
        match key {
            b"before" => p.before = r.image(image)?,
            b"after" => p.after = r.image(image)?,
            b"source" => p.source = r.source()?,
            b"op" => p.op = r.text_or_null()?,
            _ => r.skip(1)?,
        }
        Some(())
    })?;
    r.ws();
    (r.i == r.b.len()).then_some(p)
}

struct Reader<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.ws();
        self.b
            .get(self.i..)?
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    /// Reads an object, handing each key to `field`, which must read its value.
    fn object(
        &mut self,
        depth: usize,
        mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.key()?;
            self.eat(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A field name without escapes, as bytes (`None` if it has escapes or control
    /// characters: serde decodes those).
    fn key(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        self.i = stop(self.b, start);
        if *self.b.get(self.i)? != b'"' {
            return None;
        }
        self.i += 1;
        Some(&self.b[start..self.i - 1])
    }

    /// A string, borrowed unless it has escapes (then decoded into an owned string).
    fn text(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.i;
        self.i = stop(self.b, start);
        if *self.b.get(self.i)? == b'"' {
            // Quotes and backslashes are ASCII: every slice here is on character boundaries.
            let text = &self.s[start..self.i];
            self.i += 1;
            return Some(Cow::Borrowed(text));
        }
        let mut out = String::with_capacity(self.i - start + 16);
        let mut from = start;
        loop {
            match *self.b.get(self.i)? {
                b'"' => {
                    out.push_str(&self.s[from..self.i]);
                    self.i += 1;
                    return Some(Cow::Owned(out));
                }
                b'\\' => {
                    out.push_str(&self.s[from..self.i]);
                    out.push(self.escape()?);
                    from = self.i;
                    self.i = stop(self.b, self.i);
                }
                _ => return None,
            }
        }
    }

    /// Passes over a string, checking its escapes as serde_json does when it ignores a value
    /// (a `\\u` escape needs four hex digits, not a valid character).
    fn skip_text(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            self.i = stop(self.b, self.i);
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => {
                    let e = *self.b.get(self.i + 1)?;
                    self.i += 2;
                    match e {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            self.hex4()?;
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    /// The character of the escape at the backslash under the cursor, as serde_json reads it
    /// (`None` for an invalid escape or a lone surrogate, which serde_json refuses).
    fn escape(&mut self) -> Option<char> {
        let e = *self.b.get(self.i + 1)?;
        self.i += 2;
        Some(match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => match self.hex4()? {
                high @ 0xD800..=0xDBFF => {
                    if self.b.get(self.i..self.i + 2)? != b"\\u" {
                        return None;
                    }
                    self.i += 2;
                    let low = self.hex4()?;
                    if !(0xDC00..=0xDFFF).contains(&low) {
                        return None;
                    }
                    char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))?
                }
                0xDC00..=0xDFFF => return None,
                code => char::from_u32(code)?,
            },
            _ => return None,
        })
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.b.get(self.i..self.i + 4)?;
        let mut code = 0;
        for &d in digits {
            code = code * 16 + char::from(d).to_digit(16)?;
        }
        self.i += 4;
        Some(code)
    }

    /// The last commit LSN of Debezium's `source.sequence` text (`"[\"123\",\"456\"]"`, or
    /// `"[null,\"456\"]"`), read in place: the text is escaped, and decoding it would copy
    /// it once per event.
    fn last_commit(&mut self) -> Option<Option<u64>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").map(|_| None);
        }
        let start = self.i;
        let rest = self.b.get(start..)?;
        let commit = if let Some(digits) = rest.strip_prefix(br#""[\""#) {
            let n = digits.iter().take_while(|d| d.is_ascii_digit()).count();
            match digits.get(n..n + 3) {
                // The digits' value, or none past u64 (as `str::parse` says).
                Some(br#"\","#) if (1..=20).contains(&n) => {
                    Some(digits[..n].iter().try_fold(0u64, |v, d| {
                        v.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                    }))
                }
                _ => None,
            }
        } else if rest.starts_with(b"\"[null,") {
            Some(None)
        } else {
            None
        };
        match commit {
            Some(commit) => {
                self.skip(2)?;
                Some(commit)
            }
            // Anything else: decode the text and parse it.
            None => {
                self.i = start;
                let text = self.text()?;
                Some(crate::change::last_commit_from_sequence(&text))
            }
        }
    }

    fn text_or_null(&mut self) -> Option<Option<Cow<'a, str>>> {
        match self.peek()? {
            b'n' => self.literal(b"null").map(|_| None),
            _ => self.text().map(Some),
        }
    }

    /// An integer of up to 18 digits, without sign, leading zero, fraction or exponent: the
    /// ones serde_json reads as the same integer. `None` (nothing consumed) otherwise.
    fn small_integer(&mut self) -> Option<i64> {
        self.ws();
        let start = self.i;
        let negative = self.b.get(self.i) == Some(&b'-');
        let digits = start + usize::from(negative);
        let mut end = digits;
        while let Some(b'0'..=b'9') = self.b.get(end) {
            end += 1;
        }
        let n = end - digits;
        let plain = (1..=18).contains(&n)
            && !(n > 1 && self.b[digits] == b'0')
            && !matches!(self.b.get(end), Some(b'.' | b'e' | b'E'))
            // serde_json reads `-0` as the float -0.0.
            && !(negative && n == 1 && self.b[digits] == b'0');
        if !plain {
            return None;
        }
        let value = self.b[digits..end]
            .iter()
            .fold(0i64, |v, d| v * 10 + i64::from(d - b'0'));
        self.i = end;
        Some(if negative { -value } else { value })
    }

    /// A JSON value as serde_json would build it.
    fn value(&mut self, depth: usize) -> Option<Value> {
        match self.peek()? {
            b'"' => Some(Value::String(self.text()?.into_owned())),
            b'n' => self.literal(b"null").map(|_| Value::Null),
            b't' => self.literal(b"true").map(|_| Value::Bool(true)),
            b'f' => self.literal(b"false").map(|_| Value::Bool(false)),
            b'-' | b'0'..=b'9' => match self.small_integer() {
                Some(n) => Some(Value::from(n)),
                None => self.by_serde(depth),
            },
            _ => self.by_serde(depth),
        }
    }

    /// The next value (a number of another form, an object, an array) read by serde_json.
    fn by_serde(&mut self, depth: usize) -> Option<Value> {
        self.ws();
        let start = self.i;
        self.skip(depth)?;
        serde_json::from_str(&self.s[start..self.i]).ok()
    }

    /// Passes over one value, checking it as serde_json would.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.skip_text(),
            b'{' => self.object(depth + 1, |r, _| r.skip(depth + 1)),
            b'[' => {
                self.i += 1;
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.skip(depth + 1)?;
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'n' => self.literal(b"null"),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// Passes over a number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        let digits = |r: &mut Self| {
            let start = r.i;
            while let Some(b'0'..=b'9') = r.b.get(r.i) {
                r.i += 1;
            }
            (r.i > start).then_some(r.i - start)
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let first = *self.b.get(self.i)?;
        if digits(self)? > 1 && first == b'0' {
            return None;
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            digits(self)?;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            digits(self)?;
        }
        Some(())
    }

    /// A row image (`null` or an object) against its schema.
    fn image(&mut self, schema: &ImageSchema) -> Option<Option<TypedImage>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").map(|_| None);
        }
        let width = schema.columns.len();
        let null = || Cell::Value(Value::Null);
        let mut cells: Vec<Cell> = Vec::with_capacity(width);
        let mut next = 0;
        self.object(1, |r, key| {
            // Fields almost always come in schema order: try the next column first.
            let i = if schema
                .columns
                .get(next)
                .is_some_and(|c| c.name.as_bytes() == key)
            {
                next
            } else {
                match schema.columns.iter().position(|c| c.name.as_bytes() == key) {
                    Some(i) => i,
                    None => return r.skip(2),
                }
            };
            let cell = r.cell(&schema.columns[i], schema.formats[i])?;
            if i == cells.len() {
                cells.push(cell);
            } else {
                cells.resize_with(width, null);
                cells[i] = cell;
            }
            next = i + 1;
            Some(())
        })?;
        cells.resize_with(width, null);
        Some(Some(TypedImage(cells)))
    }

    /// One column's value, normalised as [`normalise`] does.
    fn cell(&mut self, column: &Column, format: WireFormat) -> Option<Cell> {
        match format {
            WireFormat::DecimalBytes { scale } => match self.peek()? {
                b'n' => self.literal(b"null").map(|_| Cell::Value(Value::Null)),
                _ => {
                    let b64 = self.text()?;
                    if b64 == UNAVAILABLE_VALUE {
                        return Some(Cell::Unchanged);
                    }
                    let text = decimal_from_base64(&b64, scale).ok()?;
                    Some(Cell::Value(Value::String(text)))
                }
            },
            WireFormat::Plain if column.ty != ColumnType::Json => match self.value(2)? {
                Value::String(s) if s == UNAVAILABLE_VALUE => Some(Cell::Unchanged),
                v => Some(Cell::Value(v)),
            },
            format => normalise(column, format, self.value(2)?).ok(),
        }
    }

    /// The `source` block (`null` or an object): the fields floe uses, each at most once.
    fn source(&mut self) -> Option<Option<Source<'a>>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").map(|_| None);
        }
        let mut s = Source {
            lsn: None,
            ts_ms: None,
            schema: None,
            table: None,
            last_commit: None,
        };
        let mut seen = [false; 5];
        let mut once = |field: usize| !std::mem::replace(&mut seen[field], true);
        self.object(1, |r, key| {
            match key {
                b"lsn" if once(0) => {
                    s.lsn = match r.peek()? {
                        b'n' => r.literal(b"null").map(|_| None)?,
                        _ => Some(u64::try_from(r.small_integer()?).ok()?),
                    }
                }
                b"ts_ms" if once(1) => {
                    s.ts_ms = match r.peek()? {
                        b'n' => r.literal(b"null").map(|_| None)?,
                        _ => Some(r.small_integer()?),
                    }
                }
                b"schema" if once(2) => s.schema = r.text_or_null()?,
                b"table" if once(3) => s.table = r.text_or_null()?,
                b"sequence" if once(4) => s.last_commit = r.last_commit()?,
                // A repeated field is an error for serde: let it say so.
                b"lsn" | b"ts_ms" | b"schema" | b"table" | b"sequence" => return None,
                _ => r.skip(2)?,
            }
            Some(())
        })?;
        Some(Some(s))
    }
}

/// Where the string text starting at `i` stops: the first `"`, `\\` or control character (or
/// the end). Eight bytes at a time, as serde_json does.
fn stop(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(i..).and_then(|rest| rest.first_chunk::<8>()) {
        let w = u64::from_le_bytes(*chunk);
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        // A byte is flagged where it is zero (after the xor) or below 0x20; the lowest flag
        // is exact (borrows only flag bytes above it).
        let flags = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGH;
        if flags != 0 {
            return i + flags.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::envelope::PayloadSeed;
    use serde::de::DeserializeSeed;
    use std::io::BufRead;

    /// The schema of the captured events, and their payloads.
    fn captured() -> (ImageSchema, Vec<String>) {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/fixtures/debezium-transactions.jsonl.gz"
        );
        let file = std::fs::File::open(path).expect("fixture");
        let mut schema = None;
        let mut payloads = Vec::new();
        for line in std::io::BufReader::new(flate2::read::GzDecoder::new(file)).lines() {
            let line = line.expect("fixture line");
            let Some((_, value)) = line.split_once('\t') else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(value) else {
                continue;
            };
            if v["payload"].is_null() {
                continue;
            }
            if schema.is_none() {
                let raw = v["schema"].to_string();
                schema = crate::decode::json::image_schema(&raw).expect("schema");
            }
            payloads.push(v["payload"].to_string());
        }
        (schema.expect("a typed schema"), payloads)
    }

    /// The serde path's reading, as the reference.
    fn by_serde<'a>(text: &'a str, image: &ImageSchema) -> Result<TypedPayload<'a>, String> {
        let mut de = serde_json::Deserializer::from_str(text);
        PayloadSeed(image)
            .deserialize(&mut de)
            .and_then(|p| de.end().map(|_| p))
            .map_err(|e| e.to_string())
    }

    /// When the fast reader accepts a payload, serde reads the same thing.
    fn agrees(text: &str, image: &ImageSchema) -> bool {
        match payload(text, image) {
            Some(fast) => {
                let slow = by_serde(text, image)
                    .unwrap_or_else(|e| panic!("accepted, but serde says {e}: {text}"));
                assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{text}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn string_stops_at_quotes_backslashes_and_control_characters() {
        for (text, at) in [
            ("abc\"", 3),
            ("abcdefghijkl\\x", 12),
            ("ab\u{1f}", 2),
            ("\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\"", 12),
            ("", 0),
            ("no end at all, longer than eight", 32),
            ("\u{7f}\u{20}\"", 2),
        ] {
            assert_eq!(stop(text.as_bytes(), 0), at, "{text:?}");
        }
        // Every position of every byte value, across the word boundaries.
        for pos in 0..20 {
            for c in 0u8..=255 {
                let mut b = vec![b'a'; 24];
                b[pos] = c;
                let expect = if c == b'"' || c == b'\\' || c < 0x20 {
                    pos
                } else {
                    24
                };
                assert_eq!(stop(&b, 0), expect, "byte {c:#x} at {pos}");
            }
        }
    }

    #[test]
    fn reads_every_captured_payload_as_serde_does() {
        let (image, payloads) = captured();
        assert!(payloads.len() > 1000);
        for p in &payloads {
            assert!(
                agrees(p, &image),
                "the fast path must read the real events: {p}"
            );
        }
    }

    #[test]
    fn mangled_payloads_agree_or_fall_back() {
        // Captured payloads with a few bytes replaced, inserted or removed, JSON's own
        // characters most of all: whatever the fast path accepts, serde reads the same way.
        let (image, payloads) = captured();
        const ALPHABET: &[u8] = b"\"\\{}[],:-+.0129eEnultrfx \t\n\x01";
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let (mut fast, mut total) = (0, 0);
        for _ in 0..20_000 {
            let mut text = payloads[next(payloads.len())].clone().into_bytes();
            for _ in 0..1 + next(3) {
                let at = next(text.len());
                let c = ALPHABET[next(ALPHABET.len())];
                match next(3) {
                    0 => text[at] = c,
                    1 => text.insert(at, c),
                    _ => {
                        text.remove(at);
                    }
                }
            }
            // Only valid UTF-8 reaches the reader (the decoder checks it first).
            let Ok(text) = String::from_utf8(text) else {
                continue;
            };
            total += 1;
            if agrees(&text, &image) {
                fast += 1;
            }
        }
        // Some mangling leaves valid payloads (a changed digit, a space): the fast path reads
        // those; the rest fall back.
        assert!(
            fast > total / 20 && fast < total,
            "{fast} of {total} read fast"
        );
    }

    #[test]
    fn odd_payloads_agree_or_fall_back() {
        let (image, payloads) = captured();
        let base = &payloads[0];
        let after = |cells: &str| {
            format!(
                r#"{{"before":null,"after":{{{cells}}},"source":{{"schema":"public","table":"transactions","lsn":5,"ts_ms":-7}},"op":"c"}}"#
            )
        };
        // Read fast, and the same as serde.
        let fast = [
            after(
                r#""transaction_id":1,"user_id":-2,"amount":"BOI=","status":"a\"b\\c\u00e9\ud83c\udf89""#,
            ),
            after(r#""status":"x","transaction_id":1"#),
            after(
                r#""transaction_id":123456789012345678,"unknown":{"a":[1,2.5e-3,{"b":null}],"c":"\n"}"#,
            ),
            after(r#""transaction_id":1,"amount":"__debezium_unavailable_value","metadata":"{}""#),
            after(r#""transaction_id":1.5,"user_id":0,"currency":true,"status":null"#),
            after(r#""transaction_id":1,"transaction_id":2"#),
            after(r#""transaction_id":-0"#),
            after(r#""transaction_id":1234567890123456789"#),
            format!(
                " \n{}\t ",
                after(r#" "transaction_id" : 1 , "user_id" : 2 "#)
            ),
            base.replace(r#""op":"#, r#""extra":[[],{},"",-0.0,1E+2],"op":"#),
            after(r#""status":"\/\b\f\n\r\t\u0000\u00E9\uD83C\uDF89x""#),
            after(r#""unknown":"a\"\ud83c","x":"\udf89""#),
        ];
        for text in &fast {
            assert!(agrees(text, &image), "should be read fast: {text}");
        }
        // Left to serde: it reads them, or explains what is wrong.
        let slow = [
            after(r#""transaction_id":01"#),
            after(r#""transaction_id":1,"amount":"not base64""#),
            after(r#""transaction_id":1,"amount":5"#),
            after(r#""transaction_\u0069d":1"#),
            after("\"status\":\"tab\tinside\""),
            after(r#""transaction_id":1,"status":"x"#),
            after(r#""unknown":[1,]"#),
            after(r#""unknown":1.e5"#),
            after(r#""unknown":"\x""#),
            after(r#""status":"\ud83c""#),
            after(r#""status":"\ud83cx""#),
            after(r#""status":"\ud83c\u0041""#),
            after(r#""status":"\udf89""#),
            after(r#""status":"\u12g4""#),
            after(r#""unknown":"\u12""#),
            base.replace(r#""lsn":"#, r#""lsn":1,"lsn":"#),
            base.replace(r#""lsn":"#, r#""lsn":-1,"x":"#),
            format!("{base} x"),
            format!("[{base}]"),
            after(&format!(
                r#""unknown":{}1{}"#,
                "[".repeat(100),
                "]".repeat(100)
            )),
        ];
        for text in &slow {
            assert!(!agrees(text, &image), "should be left to serde: {text}");
        }
    }
}
