//! The flat byte lists of the one-call request phase (WIT 0.1.8, `on-request`): the
//! fields of the headers a plugin reads, sent with the call (`request-given.fields`),
//! and the edits it returns (`request-outcome.edits`), made on the request when the
//! call returns. The SDK writes and reads the same layout (`plugin-sdk/src/flat.rs`).

use bytes::Bytes;
use http::header::HeaderMap;

use super::bindings::types::EditError;
use super::edits::Edit;
use super::message::{QueuedEdit, RequestView};
use super::state::HostState;

impl HostState {
    /// Makes the header edits `on-request` returned (`request-outcome.edits`, flat
    /// bytes) on `view`: request edits in order, response edits queued. Edits the
    /// plugin refused itself are logged and counted as refusals, as if it had made the
    /// call. The first edit the gateway refuses, or bytes that do not parse, stop
    /// there with why.
    pub(crate) fn edit_returned(
        &mut self,
        view: &mut RequestView,
        edits: Vec<u8>,
    ) -> Result<(), String> {
        let bytes = Bytes::from(edits);
        let mut rest = &bytes[..];
        let mut position = 0;
        while !rest.is_empty() {
            let (op, after) = next_edit(rest)
                .ok_or_else(|| format!("edit {position} is cut short or unknown"))?;
            let Returned { name, value, .. } = op;
            rest = after;
            position += 1;
            // The value is a slice of the one buffer the edits came in: no copy.
            let value = bytes.slice_ref(value);
            let checked = std::str::from_utf8(name)
                .map_err(|_| EditError::InvalidName(String::from_utf8_lossy(name).into_owned()))
                .and_then(|name| self.names.edit(op.edit, name, value));
            if op.refused {
                let error = checked.err().unwrap_or_else(|| {
                    EditError::InvalidName(String::from_utf8_lossy(name).into_owned())
                });
                let _ = self.refused(error);
                continue;
            }
            let made = checked.and_then(|edit| {
                if op.response {
                    view.queued.push(QueuedEdit {
                        plugin: view.caller,
                        edit,
                    });
                    Ok(())
                } else {
                    edit.apply(&mut view.headers)
                }
            });
            made.map_err(|e| format!("the gateway refuses edit {}: {e:?}", position - 1))?;
        }
        Ok(())
    }
}

/// An edit in `request-outcome.edits`.
struct Returned<'a> {
    edit: Edit,
    /// Queued for the response.
    response: bool,
    /// Refused by the plugin itself: for the log and the count only.
    refused: bool,
    name: &'a [u8],
    value: &'a [u8],
}

/// The edit at the start of `bytes` (see `request-outcome.edits`), and the bytes after
/// it.
fn next_edit(bytes: &[u8]) -> Option<(Returned<'_>, &[u8])> {
    let (&op, rest) = bytes.split_first()?;
    let edit = match op & !(RESPONSE_EDIT | REFUSED_EDIT) {
        0 => Edit::Set,
        1 => Edit::SetIfAbsent,
        2 => Edit::Append,
        3 => Edit::Remove,
        _ => return None,
    };
    let (name, rest) = sized(rest)?;
    let (value, rest) = sized(rest)?;
    let returned = Returned {
        edit,
        response: op & RESPONSE_EDIT != 0,
        refused: op & REFUSED_EDIT != 0,
        name,
        value,
    };
    Some((returned, rest))
}

/// The flag of an edit queued for the response, in `request-outcome.edits`.
const RESPONSE_EDIT: u8 = 16;

/// The flag of an edit the plugin refused itself, in `request-outcome.edits`.
const REFUSED_EDIT: u8 = 32;

/// A little-endian u32 length and that many bytes, from the start of `bytes`.
fn sized(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// `fields` for `request-given`: every value of `reads` in `headers`, flat (see the
/// WIT).
pub(crate) fn given_fields(reads: &[http::HeaderName], headers: &HeaderMap) -> Vec<u8> {
    let mut fields = Vec::new();
    for (i, name) in reads.iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        for value in headers.get_all(name) {
            let value = value.as_bytes();
            fields.extend_from_slice(&i.to_le_bytes());
            fields.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes());
            fields.extend_from_slice(value);
        }
    }
    fields
}
