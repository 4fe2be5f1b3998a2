//! Byte-level text helpers the decoders and media-type parsing share: splitting at an ASCII
//! byte and trimming ASCII whitespace first. `str::split`, `str::lines` and `str::trim` decode
//! characters, which on a small request costs more than parsing its numbers; these give the
//! same pieces for a fraction of that.

/// The pieces of `text` between occurrences of the ASCII byte `separator`, as `str::split`
/// would give them.
#[inline]
pub(crate) fn split_at_byte(text: &str, separator: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.bytes().position(|b| b == separator) {
            Some(at) => {
                rest = Some(&text[at + 1..]);
                Some(&text[..at])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

/// Whether `str::trim` may remove more at a byte where `trim_ascii` stopped: a non-ASCII
/// byte, or the vertical tab (Unicode whitespace, but not `u8::is_ascii_whitespace`).
#[inline]
fn may_be_more_whitespace(byte: u8) -> bool {
    !byte.is_ascii() || byte == 0x0b
}

/// `text` without leading and trailing whitespace, as `str::trim` (Unicode whitespace), with
/// ASCII handled first.
#[inline]
pub(crate) fn trim(text: &str) -> &str {
    let text = text.trim_ascii();
    match (text.as_bytes().first(), text.as_bytes().last()) {
        (Some(&first), Some(&last))
            if may_be_more_whitespace(first) || may_be_more_whitespace(last) =>
        {
            text.trim()
        }
        _ => text,
    }
}

/// `text` without trailing whitespace, as `str::trim_end` (Unicode whitespace), with ASCII
/// handled first.
#[inline]
pub(crate) fn trim_end(text: &str) -> &str {
    let text = text.trim_ascii_end();
    match text.as_bytes().last() {
        Some(&last) if may_be_more_whitespace(last) => text.trim_end(),
        _ => text,
    }
}
