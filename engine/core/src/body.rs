//! Checks on a message body before it is accepted: sizes within
//! [`Limits`] (so the `Deliver` built from it always fits in a frame, see
//! `Limits::validate`) and a media reference that is well-formed.

use std::fmt;

use tern_wire::{Body, ErrorCode, Media};

use crate::limits::Limits;

/// A size-limited part of a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyField {
    /// Text message.
    Text,
    /// Media URL.
    Url,
    /// Media MIME type.
    Mime,
    /// Media caption.
    Caption,
    /// Media thumbnail (base64).
    Thumbnail,
}

impl BodyField {
    fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Url => "media url",
            Self::Mime => "media mime type",
            Self::Caption => "media caption",
            Self::Thumbnail => "media thumbnail",
        }
    }
}

/// What is wrong with a media reference.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaReason {
    /// The URL does not start with `https://` or `http://`.
    UrlScheme,
    /// The URL has a byte outside printable ASCII (space and controls
    /// included).
    UrlCharacter,
    /// The MIME type is not `type/subtype` of token characters.
    Mime,
    /// The thumbnail is not padded standard base64.
    ThumbnailNotBase64,
    /// The file size is 0.
    SizeZero,
}

/// Why a body was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// A field is longer than its limit.
    TooLarge {
        /// Which field.
        field: BodyField,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The media reference is malformed.
    BadMedia(MediaReason),
}

impl BodyError {
    /// The protocol code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::BodyTooLarge,
            Self::BadMedia(_) => ErrorCode::BadMediaReference,
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { field, len, max } => {
                write!(f, "{} is {len} bytes, at most {max} allowed", field.name())
            }
            Self::BadMedia(reason) => {
                let why = match reason {
                    MediaReason::UrlScheme => "url must start with https:// or http://",
                    MediaReason::UrlCharacter => "url must be printable ASCII without spaces",
                    MediaReason::Mime => "mime type must be type/subtype",
                    MediaReason::ThumbnailNotBase64 => "thumbnail must be padded base64",
                    MediaReason::SizeZero => "file size must not be 0",
                };
                write!(f, "bad media reference: {why}")
            }
        }
    }
}

impl std::error::Error for BodyError {}

fn size(field: BodyField, len: usize, max: usize) -> Result<(), BodyError> {
    if len > max {
        Err(BodyError::TooLarge { field, len, max })
    } else {
        Ok(())
    }
}

/// Checks `body` against `limits`.
pub fn validate(body: &Body<'_>, limits: &Limits) -> Result<(), BodyError> {
    match body {
        Body::Text(text) => size(BodyField::Text, text.len(), limits.body_text_bytes_max),
        Body::Media(media) => check_media(media, limits),
    }
}

fn check_media(m: &Media<'_>, limits: &Limits) -> Result<(), BodyError> {
    size(BodyField::Url, m.url.len(), limits.media_url_bytes_max)?;
    size(BodyField::Mime, m.mime.len(), limits.media_mime_bytes_max)?;
    size(
        BodyField::Caption,
        m.caption.len(),
        limits.media_caption_bytes_max,
    )?;
    size(
        BodyField::Thumbnail,
        m.thumbnail_b64.len(),
        limits.thumbnail_b64_bytes_max,
    )?;
    let url = m.url.as_bytes();
    let has_scheme = ["https://", "http://"].iter().any(|scheme| {
        url.get(..scheme.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(scheme.as_bytes()))
            && url.len() > scheme.len()
    });
    if !has_scheme {
        return Err(BodyError::BadMedia(MediaReason::UrlScheme));
    }
    if !url.iter().all(u8::is_ascii_graphic) {
        return Err(BodyError::BadMedia(MediaReason::UrlCharacter));
    }
    if !is_mime(m.mime) {
        return Err(BodyError::BadMedia(MediaReason::Mime));
    }
    if !is_base64(m.thumbnail_b64) {
        return Err(BodyError::BadMedia(MediaReason::ThumbnailNotBase64));
    }
    if m.size == 0 {
        return Err(BodyError::BadMedia(MediaReason::SizeZero));
    }
    Ok(())
}

/// RFC 6838 `type/subtype`, each a non-empty run of restricted-name
/// characters.
fn is_mime(mime: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match mime.split_once('/') {
        Some((kind, subtype)) => token(kind) && token(subtype),
        None => false,
    }
}

/// Standard base64 with padding; empty is allowed (no thumbnail).
fn is_base64(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() % 4 != 0 {
        return false;
    }
    let body = b
        .strip_suffix(b"==")
        .or_else(|| b.strip_suffix(b"="))
        .unwrap_or(b);
    body.iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::DELIVER_OVERHEAD_BYTES;
    use tern_wire::{Encoder, Frame, SHA256_LEN};

    fn media<'a>(url: &'a str, mime: &'a str, thumb: &'a str, caption: &'a str) -> Media<'a> {
        Media {
            url,
            mime,
            size: 1234,
            sha256: [7; SHA256_LEN],
            thumbnail_b64: thumb,
            caption,
        }
    }

    #[test]
    fn text_bound() {
        let l = Limits::default();
        let at = "a".repeat(l.body_text_bytes_max);
        assert_eq!(validate(&Body::Text(&at), &l), Ok(()));
        let over = "a".repeat(l.body_text_bytes_max + 1);
        let err = validate(&Body::Text(&over), &l).unwrap_err();
        assert_eq!(
            err,
            BodyError::TooLarge {
                field: BodyField::Text,
                len: l.body_text_bytes_max + 1,
                max: l.body_text_bytes_max
            }
        );
        assert_eq!(err.code(), ErrorCode::BodyTooLarge);
        assert_eq!(validate(&Body::Text(""), &l), Ok(()));
    }

    #[test]
    fn media_field_bounds() {
        let l = Limits::default();
        let url_at = format!("https://{}", "u".repeat(l.media_url_bytes_max - 8));
        let url_over = format!("{url_at}u");
        let thumb_at = "A".repeat(l.thumbnail_b64_bytes_max);
        let thumb_over = "A".repeat(l.thumbnail_b64_bytes_max + 4);
        let cap_at = "c".repeat(l.media_caption_bytes_max);
        let cap_over = "c".repeat(l.media_caption_bytes_max + 1);
        let mime_at = format!("image/{}", "x".repeat(l.media_mime_bytes_max - 6));
        let mime_over = format!("{mime_at}x");
        let ok = media(&url_at, &mime_at, &thumb_at, &cap_at);
        assert_eq!(validate(&Body::Media(ok), &l), Ok(()));
        let cases = [
            (media(&url_over, "image/jpeg", "", ""), BodyField::Url),
            (media(&url_at, &mime_over, "", ""), BodyField::Mime),
            (
                media(&url_at, "image/jpeg", &thumb_over, ""),
                BodyField::Thumbnail,
            ),
            (
                media(&url_at, "image/jpeg", "", &cap_over),
                BodyField::Caption,
            ),
        ];
        for (m, field) in cases {
            match validate(&Body::Media(m), &l) {
                Err(BodyError::TooLarge { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_media_references() {
        let l = Limits::default();
        let url = "https://media.example/abc";
        let cases = [
            (
                media("ftp://x/y", "image/jpeg", "", ""),
                MediaReason::UrlScheme,
            ),
            (
                media("https://", "image/jpeg", "", ""),
                MediaReason::UrlScheme,
            ),
            (media("", "image/jpeg", "", ""), MediaReason::UrlScheme),
            (
                media("https://a b", "image/jpeg", "", ""),
                MediaReason::UrlCharacter,
            ),
            (
                media("https://a\nb", "image/jpeg", "", ""),
                MediaReason::UrlCharacter,
            ),
            (
                media("https://ä", "image/jpeg", "", ""),
                MediaReason::UrlCharacter,
            ),
            (media(url, "jpeg", "", ""), MediaReason::Mime),
            (media(url, "image/", "", ""), MediaReason::Mime),
            (media(url, "image/jp eg", "", ""), MediaReason::Mime),
            (
                media(url, "image/jpeg", "abc", ""),
                MediaReason::ThumbnailNotBase64,
            ),
            (
                media(url, "image/jpeg", "ab!=", ""),
                MediaReason::ThumbnailNotBase64,
            ),
            (
                media(url, "image/jpeg", "a===", ""),
                MediaReason::ThumbnailNotBase64,
            ),
        ];
        for (m, reason) in cases {
            let err = validate(&Body::Media(m), &l).unwrap_err();
            assert_eq!(err, BodyError::BadMedia(reason), "{m:?}");
            assert_eq!(err.code(), ErrorCode::BadMediaReference);
        }
        let zero = Media {
            size: 0,
            ..media(url, "image/jpeg", "", "")
        };
        assert_eq!(
            validate(&Body::Media(zero), &l),
            Err(BodyError::BadMedia(MediaReason::SizeZero))
        );
        for good in [
            media("HTTP://host/x", "image/svg+xml", "QUJD", "hi"),
            media(url, "video/mp4", "QUI=", ""),
            media(url, "application/vnd.a-b_c", "QQ==", ""),
        ] {
            assert_eq!(validate(&Body::Media(good), &l), Ok(()), "{good:?}");
        }
    }

    /// The largest bodies the default limits accept fit in a Deliver
    /// frame, with the overhead measured below DELIVER_OVERHEAD_BYTES.
    #[test]
    fn largest_body_fits() {
        let l = Limits::default();
        let mut enc = Encoder::new(&tern_wire::Limits::with_max_frame_len(l.max_frame_len));
        let deliver = |body| Frame::Deliver {
            id: u64::MAX,
            from: u64::MAX,
            client_msg_id: u64::MAX,
            sent_at_ms: u64::MAX,
            body,
        };
        let text = "t".repeat(l.body_text_bytes_max);
        let frame = enc.encode_to_vec(&deliver(Body::Text(&text))).unwrap();
        let overhead_text = frame.len() - text.len();

        let url = format!("https://{}", "u".repeat(l.media_url_bytes_max - 8));
        let mime = format!("image/{}", "x".repeat(l.media_mime_bytes_max - 6));
        let thumb = "A".repeat(l.thumbnail_b64_bytes_max);
        let caption = "c".repeat(l.media_caption_bytes_max);
        let m = media(&url, &mime, &thumb, &caption);
        assert_eq!(validate(&Body::Media(m), &l), Ok(()));
        let frame = enc.encode_to_vec(&deliver(Body::Media(m))).unwrap();
        let overhead_media = frame.len() - url.len() - mime.len() - thumb.len() - caption.len();
        assert!(
            overhead_text < 400 && overhead_media < 400,
            "overhead text {overhead_text}, media {overhead_media}"
        );
        assert!(overhead_media < DELIVER_OVERHEAD_BYTES);
    }
}
